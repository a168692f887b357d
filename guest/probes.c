/*
 * The CPU's own verdict on the tables at work (docs/guest-contract.md
 * "Probes"): after zap_low_mappings, a few accesses whose outcome the spec
 * fixes - fetches from data and text, writes to data and (pv=xen) to table
 * pages, a read of the zapped identity mapping. Each runs under probe_run:
 * a fault is caught, recorded and survived, so one boot answers every probe.
 * What each must do is the harness's to compute, from the scenario and the
 * spec; the guest only records what happened.
 */
#include "guest.h"
#include "paravirt.h"
#include "probes.h"
#include "processor.h"
#include "sections.h"
#include "xen.h"
#include "work.h"

struct probe_record probe_records[PROBE_RECORDS_MAX];
u32 probe_count;

/* entry.S reads and writes these. */
u32 probe_armed;
static struct probe_fault probe_caught;

/* bss, page aligned, linked right after empty_zero_page: lowmem data above
 * __init_end's page but in its pmd-sized chunk, so that 2.6.21's stale
 * protection (kernel-facts.md section 6 A) leaves it executable. */
u8 probe_data_page[PAGE_SIZE] __aligned(PAGE_SIZE) __section(".bss.page_aligned");

int probe_call(void (*fn)(unsigned long), unsigned long arg); /* entry.S */

/* The exception path's first question. Disarm before anything else, so that
 * a fault in here goes to exception_report like any other. */
int probe_fixup(struct exception_frame *f)
{
	if (!probe_armed)
		return 0;
	probe_armed = 0;
	probe_caught = (struct probe_fault){
		.vector = f->vector, .error = f->error_code, .cr2 = read_cr2(), .eip = f->eip,
	};
	return 1;
}

int probe_run(void (*fn)(unsigned long), unsigned long arg, struct probe_fault *fault)
{
	probe_caught = (struct probe_fault){ 0 };
	int faulted = probe_call(fn, arg);
	if (fault)
		*fault = faulted ? probe_caught : (struct probe_fault){ 0 };
	return faulted;
}

static void probe(enum probe_id id, const char *name, unsigned long va,
		  void (*fn)(unsigned long), unsigned long arg)
{
	struct probe_fault f;
	BUG_ON(probe_count >= PROBE_RECORDS_MAX);
	struct probe_record *r = &probe_records[probe_count];
	u32 faulted = (u32)probe_run(fn, arg, &f);
	*r = (struct probe_record){
		.id = id, .va = va, .faulted = faulted,
		.vector = f.vector, .error = f.error, .cr2 = f.cr2, .eip = f.eip,
	};
	probe_count++;
	printk("probe id=%u name=%s va=0x%08x faulted=%u vector=%u error=0x%x cr2=0x%08x eip=0x%08x\n",
	       r->id, name, r->va, r->faulted, r->vector, r->error, r->cr2, r->eip);
}

/* The first PTE page pagetable_init allocated (the first alloc_pt logged). */
static u32 first_alloc_pt_pfn(void)
{
	for (u32 i = 0; i < pv_hook_log_len; i++)
		if (pv_hook_log[i].op == PV_HOOK_ALLOC_PT)
			return pv_hook_log[i].pfn;
	BUG_ON(1); /* under pv=xen (no PSE) pagetable_init always allocates some */
	return 0;
}

void run_probes(void)
{
	unsigned long data = (unsigned long)probe_data_page;

	/* Where bug A shows: above __init_end's page, in the same chunk. */
	BUG_ON(data <= (unsigned long)__init_end || (data & PMD_MASK) != ((unsigned long)__init_end & PMD_MASK));

	/* 1: a fetch from lowmem data. NX (PAE, EFER.NXE) refuses it with a
	 * present-page fetch fault (0x11) unless a large page or 2.6.21's
	 * stale protection made the page executable. */
	probe_data_page[0] = 0xc3; /* ret */
	probe(PROBE_EXEC_DATA, "exec-data", data, (void (*)(unsigned long))data, 0);
	/* 2: a fetch from kernel text: never refused. */
	probe(PROBE_EXEC_TEXT, "exec-text", (unsigned long)probe_text_ret, probe_text_ret, 0);
	/* 3: a write to lowmem data: never refused. */
	probe(PROBE_WRITE_DATA, "write-data", data, probe_rewrite_word, data);
	if (xen_start_info) {
		/* 4, 5: page-table pages are read-only under the hypervisor, and
		 * CR0.WP makes that bind ring 0: a protection fault, P|W. */
		unsigned long root = (unsigned long)swapper_pg_dir;
		unsigned long pte = (unsigned long)__va((unsigned long)first_alloc_pt_pfn() << PAGE_SHIFT);
		probe(PROBE_WRITE_ROOT, "write-root", root, probe_rewrite_word, root);
		probe(PROBE_WRITE_PTE, "write-pte", pte, probe_rewrite_word, pte);
	}
	/* 6: the kernel's load address through the identity mapping, gone since
	 * zap_low_mappings: a not-present fault. */
	probe(PROBE_READ_IDENTITY, "read-identity", LOAD_PHYSICAL_ADDR, probe_read_word,
	      LOAD_PHYSICAL_ADDR);
}
