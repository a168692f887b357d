/*
 * paravirt_ops: the page-table hooks of the seed patch as a table of function
 * pointers. One backend is copied into paravirt_ops per boot: native
 * (start_kernel) or the Xen-like one (xen_start_kernel, pv=xen).
 *
 * PREPATCH (2.6.21) had no pagetable_setup_start/done hooks; the prepatch
 * build calls them at the same two points as 2.6.22 so that pv=xen can run
 * on the old code, and its native hooks hold 2.6.21's inline code
 * (docs/xen.md "The pre-patch variant"): natively the same stores.
 */
#ifndef GUEST_PARAVIRT_H
#define GUEST_PARAVIRT_H

#include "pgtable.h"

struct paravirt_ops {
	const char *name;
	/* PAE: may pagetables share swapper's kernel pmd page (2.6.23's
	 * SHARED_KERNEL_PMD)? Not under Xen, whose pmd page for the kernel slot
	 * holds the hypervisor's own entries and belongs to one root only. */
	bool shared_kernel_pmd;
	void (*pagetable_setup_start)(pgd_t *base);
	void (*pagetable_setup_done)(pgd_t *base);
	void (*alloc_pt)(u32 pfn);
	void (*alloc_pd)(u32 pfn);
	void (*set_pte)(pte_t *ptep, pte_t pte);
	void (*set_pmd)(pmd_t *pmdp, pmd_t pmd);
	void (*set_pgd)(pgd_t *pgdp, pgd_t pgd);
	/* pgd_alloc (2-level): pfn's kernel entries were just copied from
	 * clonepfn's [start, start + count). */
	void (*alloc_pd_clone)(u32 pfn, u32 clonepfn, u32 start, u32 count);
	/* Make a finished second pagetable the CPU's: native a CR3 load; Xen-like
	 * read-only root, pin, then the CR3 load through the hypervisor. */
	void (*activate_mm)(pgd_t *pgd);
};

extern struct paravirt_ops paravirt_ops;
extern const struct paravirt_ops native_paravirt_ops;
extern const struct paravirt_ops xen_paravirt_ops;

/* Select a backend by its pv= name; returns 0, or -1 for an unknown name. */
int paravirt_select(const char *name);

/*
 * The hook log the harness reads: one entry per alloc_pd/alloc_pt/
 * alloc_pd_clone call and per pin (Xen-like backend), in call order.
 * Overflow is a guest BUG, never a silent drop.
 */
enum pv_hook_op {
	PV_HOOK_ALLOC_PD = 1,
	PV_HOOK_ALLOC_PT = 2,
	PV_HOOK_PIN = 3,
	PV_HOOK_ALLOC_PD_CLONE = 4, /* pfn: the new pgd (2-level pgd_alloc) */
};
#define PV_HOOK_LOG_MAX 2048
struct pv_hook_entry {
	u32 op;
	u32 pfn;
};
extern struct pv_hook_entry pv_hook_log[PV_HOOK_LOG_MAX];
extern u32 pv_hook_log_len;
void pv_hook_log_add(enum pv_hook_op op, u32 pfn);

/* What init.c calls: every page-table write and hook goes through the table. */
static inline void paravirt_pagetable_setup_start(pgd_t *base) { paravirt_ops.pagetable_setup_start(base); }
static inline void paravirt_pagetable_setup_done(pgd_t *base) { paravirt_ops.pagetable_setup_done(base); }
void native_pagetable_setup_start(pgd_t *base);
void native_pagetable_setup_done(pgd_t *base);

static inline void paravirt_alloc_pt(u32 pfn)
{
	pv_hook_log_add(PV_HOOK_ALLOC_PT, pfn);
	paravirt_ops.alloc_pt(pfn);
}

static inline void paravirt_alloc_pd(u32 pfn)
{
	pv_hook_log_add(PV_HOOK_ALLOC_PD, pfn);
	paravirt_ops.alloc_pd(pfn);
}

static inline void paravirt_alloc_pd_clone(u32 pfn, u32 clonepfn, u32 start, u32 count)
{
	pv_hook_log_add(PV_HOOK_ALLOC_PD_CLONE, pfn);
	paravirt_ops.alloc_pd_clone(pfn, clonepfn, start, count);
}

static inline void paravirt_activate_mm(pgd_t *pgd) { paravirt_ops.activate_mm(pgd); }

static inline void set_pte(pte_t *ptep, pte_t pte) { paravirt_ops.set_pte(ptep, pte); }
static inline void set_pmd(pmd_t *pmdp, pmd_t pmd) { paravirt_ops.set_pmd(pmdp, pmd); }
static inline void set_pgd(pgd_t *pgdp, pgd_t pgd) { paravirt_ops.set_pgd(pgdp, pgd); }

#endif
