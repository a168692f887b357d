/*
 * Probes: accesses the guest makes on purpose to get the CPU's own verdict on
 * the tables (docs/guest-contract.md "Probes"). A fault inside an armed probe
 * is caught by the exception path (entry.S asks probe_fixup first), recorded
 * and resumed at the probe's recovery point; any other fault still ends in
 * exception_report (exit code 2).
 */
#ifndef GUEST_PROBES_H
#define GUEST_PROBES_H

#include "types.h"

/* What entry.S saves: pushal, the stub's vector and error code, then the
 * CPU's frame (same privilege: no ESP/SS). */
struct exception_frame {
	u32 edi, esi, ebp, esp_at_pushal, ebx, edx, ecx, eax; /* pushal */
	u32 vector, error_code; /* pushed by the stub (error code: by the CPU or a dummy 0) */
	u32 eip, cs, eflags;    /* pushed by the CPU */
};

/* One probe's outcome; the harness decodes this layout (32 bytes). vector,
 * error, cr2 and eip are 0 when faulted is 0. */
struct probe_record {
	u32 id;
	u32 va;      /* the address probed (fetched from, read or written) */
	u32 faulted; /* 1: the access raised an exception (caught) */
	u32 vector;
	u32 error;   /* the CPU's error code (#PF: P=1 W=2 U=4 RSVD=8 I/D=0x10) */
	u32 cr2;
	u32 eip;     /* the faulting instruction (for a fetch: the target itself) */
	u32 reserved;
};
_Static_assert(sizeof(struct probe_record) == 32, "docs/guest-contract.md: 32-byte records");

#define PROBE_RECORDS_MAX 16
extern struct probe_record probe_records[PROBE_RECORDS_MAX];
extern u32 probe_count;

/* Probe ids (fixed: the harness keys its expectations on them). */
enum probe_id {
	PROBE_EXEC_DATA = 1,
	PROBE_EXEC_TEXT = 2,
	PROBE_WRITE_DATA = 3,
	PROBE_WRITE_ROOT = 4, /* pv=xen only */
	PROBE_WRITE_PTE = 5,  /* pv=xen only */
	PROBE_READ_IDENTITY = 6,
};

/* The page the data probes use: page aligned, in the bss right after
 * swapper_pg_dir and empty_zero_page (above __init_end's page, in its pmd). */
extern u8 probe_data_page[4096];

/* What the last caught fault was. */
struct probe_fault {
	u32 vector, error, cr2, eip;
};

/*
 * Run fn(arg) with the fault catcher armed (entry.S). Returns 0 if fn
 * returned, 1 if it faulted: then *fault says how, and execution resumes
 * here with the stack and the callee-saved registers as they were at the
 * call. fn may be any address: a fetch fault at it is caught too.
 */
int probe_run(void (*fn)(unsigned long), unsigned long arg, struct probe_fault *fault);

/* Access routines in entry.S whose faulting instruction is one known label. */
void probe_text_ret(unsigned long unused);   /* a lone ret in .text */
void probe_read_word(unsigned long va);      /* load the u32 at va */
void probe_rewrite_word(unsigned long va);   /* load the u32 at va, store it back */
struct probe_copy {
	void *dst;
	const void *src;
};
void probe_copy16(unsigned long req);        /* 16 bytes, 4 u32 loads/stores: a struct probe_copy * */

/* entry.S: the exception path's first question (1: a probe took the fault). */
int probe_fixup(struct exception_frame *f);

#endif
