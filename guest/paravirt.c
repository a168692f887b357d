/*
 * The paravirt_ops table, its native backend and the hook log.
 *
 * Natively every hook is either the plain hardware store or nothing; the log
 * is written by the paravirt_alloc_* wrappers (paravirt.h) whatever the
 * backend, so the harness sees the same call sequence for every backend.
 */
#include "guest.h"
#include "paravirt.h"
#include "processor.h"
#include "string.h"

struct pv_hook_entry pv_hook_log[PV_HOOK_LOG_MAX];
u32 pv_hook_log_len;

void pv_hook_log_add(enum pv_hook_op op, u32 pfn)
{
	BUG_ON(pv_hook_log_len >= PV_HOOK_LOG_MAX);
	pv_hook_log[pv_hook_log_len++] = (struct pv_hook_entry){ .op = op, .pfn = pfn };
}

static void native_alloc_nop(u32 pfn)
{
	(void)pfn; /* real hardware needs no notice of a new table page */
}

static void native_alloc_pd_clone(u32 pfn, u32 clonepfn, u32 start, u32 count)
{
	(void)pfn, (void)clonepfn, (void)start, (void)count;
}

static void native_activate_mm(pgd_t *pgd)
{
	write_cr3(__pa(pgd));
}

static void native_set_pte(pte_t *ptep, pte_t pte) { native_write_entry(&ptep->pte, pte_val(pte)); }
static void native_set_pmd(pmd_t *pmdp, pmd_t pmd) { native_write_entry(&pmdp->pmd, pmd_val(pmd)); }
static void native_set_pgd(pgd_t *pgdp, pgd_t pgd) { native_write_entry(&pgdp->pgd, pgd_val(pgd)); }

const struct paravirt_ops native_paravirt_ops = {
	.name = "native",
	.shared_kernel_pmd = true,
	.pagetable_setup_start = native_pagetable_setup_start,
	.pagetable_setup_done = native_pagetable_setup_done,
	.alloc_pt = native_alloc_nop,
	.alloc_pd = native_alloc_nop,
	.set_pte = native_set_pte,
	.set_pmd = native_set_pmd,
	.set_pgd = native_set_pgd,
	.alloc_pd_clone = native_alloc_pd_clone,
	.activate_mm = native_activate_mm,
};

/* The live table: the chosen backend is copied in before paging_init. */
struct paravirt_ops paravirt_ops;

static const struct paravirt_ops *const paravirt_backends[] = {
	&native_paravirt_ops,
	&xen_paravirt_ops, /* xen.c; selected by xen_start_kernel */
};

int paravirt_select(const char *name)
{
	for (unsigned i = 0; i < ARRAY_SIZE(paravirt_backends); i++) {
		if (!strcmp(paravirt_backends[i]->name, name)) {
			paravirt_ops = *paravirt_backends[i];
			return 0;
		}
	}
	return -1;
}
