/*
 * The hypervisor's side of the domain's page tables (docs/xen.md): the
 * hypercalls, the frames it knows to be tables, and an audit that does not
 * trust the kernel. Every table write is looked at before it is performed;
 * a violation is recorded and still performed (so the final tables show the
 * kernel's intent), except a kernel-pmd replacement, which is refused as Xen
 * refuses an L3 update that would drop its own mappings.
 *
 * Per update the checks run in this order: kind 4 (refused: nothing else is
 * looked at), kind 2, then kind 3 or else kind 1. Records name frames by
 * physical address. A pin checks the frames no earlier pin validated (a
 * second pagetable shares the kernel's pte pages with the first).
 */
#include "hyp.h"
#include "processor.h"

struct hyp_violation hyp_violations[HYP_VIOLATIONS_MAX];
u32 hyp_violation_count;
u32 hyp_mmu_update_count;
u32 hyp_pin_count;

#ifdef CONFIG_X86_PAE
#define HYP_ROOT_TYPE HYP_FRAME_L3
#else
#define HYP_ROOT_TYPE HYP_FRAME_L2
#endif
/* VA of the last chunk, where PTE page B is linked. */
#define HYP_LAST_CHUNK_VA ((u32)-PMD_SIZE)
#define HYP_REPORT_LINES 16

/* Two bits per frame of the 32-bit physical space: Xen's frame table. */
#define TRACKED_FRAMES (1u << (32 - PAGE_SHIFT))
static u8 frame_types[TRACKED_FRAMES / 4];

void hyp_set_frame_type(u32 pfn, enum hyp_frame_type type)
{
	BUG_ON(pfn >= TRACKED_FRAMES);
	unsigned shift = (pfn & 3) * 2;
	frame_types[pfn >> 2] = (u8)((frame_types[pfn >> 2] & ~(3u << shift)) | ((unsigned)type << shift));
}

enum hyp_frame_type hyp_frame_type(u32 pfn)
{
	if (pfn >= TRACKED_FRAMES)
		return HYP_FRAME_NONE;
	return (enum hyp_frame_type)((frame_types[pfn >> 2] >> ((pfn & 3) * 2)) & 3);
}

/* A hypercall the domain had no business making: the domain dies. */
static void __noreturn crash_domain(const char *reason, u64 addr)
{
	printk("xen crash reason=\"%s\" addr=0x%llx\n", reason, (unsigned long long)addr);
	guest_exit(GUEST_EXIT_SELFCHECK);
}

/* The hypervisor reads tables through the linear mapping of the frames it
 * mapped itself, [0, xen_map_end); NULL for a frame beyond. */
static const pteval_t *table(u32 pfn)
{
	if (((u64)pfn << PAGE_SHIFT) >= hyp_domain.map_end)
		return NULL;
	return __va((unsigned long)pfn << PAGE_SHIFT);
}

/* A directory entry that maps a large page instead of linking a table. */
static bool is_large(pteval_t e)
{
#ifdef CONFIG_X86_PAE
	return e & _PAGE_PSE;
#else
	return (e & _PAGE_PSE) && (read_cr4() & X86_CR4_PSE);
#endif
}

/* va through the tables the CPU uses now: the leaf and the physical
 * address. false if unmapped (or through a table beyond the hypervisor's
 * reach). */
static bool walk(unsigned long va, pteval_t *leaf, u64 *pa)
{
	unsigned long cr3 = read_cr3();
	const pteval_t *t = table(cr3 >> PAGE_SHIFT);
	unsigned shift = PMD_SHIFT;
	pteval_t e;

	if (!t)
		return false;
#ifdef CONFIG_X86_PAE
	e = t[((cr3 & ~PAGE_MASK) >> 3) + (va >> PGDIR_SHIFT)];
	if (!(e & _PAGE_PRESENT) || !(t = table(entry_pfn(e))))
		return false;
#endif
	e = t[(va >> PMD_SHIFT) & (HYP_ENTRIES - 1)];
	if (!(e & _PAGE_PRESENT))
		return false;
	if (!is_large(e)) {
		if (!(t = table(entry_pfn(e))))
			return false;
		e = t[(va >> PAGE_SHIFT) & (HYP_ENTRIES - 1)];
		if (!(e & _PAGE_PRESENT))
			return false;
		shift = PAGE_SHIFT;
	}
	*leaf = e;
	*pa = ((u64)entry_pfn(e) << PAGE_SHIFT & ~((1ULL << shift) - 1)) | (va & ((1UL << shift) - 1));
	return true;
}

/* The leaf mapping frame pfn at PAGE_OFFSET + pa in the live tables (0: none). */
static pteval_t linear_leaf(u32 pfn)
{
	pteval_t leaf;
	u64 pa;
	if (pfn >= (-PAGE_OFFSET) >> PAGE_SHIFT)
		return 0;
	return walk(PAGE_OFFSET + ((unsigned long)pfn << PAGE_SHIFT), &leaf, &pa) ? leaf : 0;
}

static void record(enum hyp_violation_kind kind, u32 entry_pa, u64 value, u32 frame, u32 va)
{
	if (hyp_violation_count < HYP_VIOLATIONS_MAX)
		hyp_violations[hyp_violation_count] = (struct hyp_violation){
			.kind = kind, .entry_pa = entry_pa, .value = value, .frame = frame, .va = va,
		};
	hyp_violation_count++;
}

/* One hyp_mmu_update, as the audit sees it. */
struct update {
	u32 entry_pa;
	u64 value;
	u32 holder; /* the frame holding the entry */
	enum hyp_frame_type type;
	unsigned idx;
};

/* The VA of the first entry of table pfn, from where the live root (or
 * pt_base) links it; false if it is linked nowhere the hypervisor looks. */
static bool table_base_va(u32 pfn, enum hyp_frame_type type, u32 *va)
{
	const u32 roots[2] = { read_cr3() >> PAGE_SHIFT, hyp_domain.pt_base_pfn };
	for (unsigned r = 0; r < 2; r++) {
		const pteval_t *root = table(roots[r]);
		if (!root)
			continue;
#ifdef CONFIG_X86_PAE
		for (unsigned s = 0; s < PTRS_PER_PGD; s++) {
			if (!(root[s] & _PAGE_PRESENT))
				continue;
			if (type == HYP_FRAME_L2 && entry_pfn(root[s]) == pfn) {
				*va = (u32)s << PGDIR_SHIFT;
				return true;
			}
			const pteval_t *pmd = table(entry_pfn(root[s]));
			for (unsigned i = 0; pmd && type == HYP_FRAME_L1 && i < HYP_ENTRIES; i++) {
				if ((pmd[i] & _PAGE_PRESENT) && !is_large(pmd[i]) && entry_pfn(pmd[i]) == pfn) {
					*va = ((u32)s << PGDIR_SHIFT) | (i << PMD_SHIFT);
					return true;
				}
			}
		}
#else
		for (unsigned i = 0; type == HYP_FRAME_L1 && i < HYP_ENTRIES; i++) {
			if ((root[i] & _PAGE_PRESENT) && !is_large(root[i]) && entry_pfn(root[i]) == pfn) {
				*va = i << PMD_SHIFT;
				return true;
			}
		}
		if (type == HYP_FRAME_L2) {
			*va = 0; /* a 2-level pgd covers all of the address space */
			return true;
		}
#endif
	}
	return false;
}

/* The VA an updated entry covers (0 if unknown). Only worked out for a record. */
static u32 update_va(const struct update *u)
{
	static const unsigned span_shift[] = {
		[HYP_FRAME_L1] = PAGE_SHIFT, [HYP_FRAME_L2] = PMD_SHIFT, [HYP_FRAME_L3] = PGDIR_SHIFT,
	};
	u32 base = 0;
	if (u->type == HYP_FRAME_NONE)
		return 0;
	if (u->type != HYP_FRAME_L3 && !table_base_va(u->holder, u->type, &base))
		return 0;
	return base + ((u32)u->idx << span_shift[u->type]);
}

static void record_update(enum hyp_violation_kind kind, const struct update *u, u32 frame_pfn)
{
	record(kind, u->entry_pa, u->value, frame_pfn << PAGE_SHIFT, update_va(u));
}

/* A non-leaf entry links a frame as a table: it must be a known table,
 * and mapped read-only. */
static void audit_link(const struct update *u)
{
#ifdef MUTANT_AUDIT_NO_LINK
	(void)u; /* mutant: any link goes through unchecked */
	return;
#endif
	u32 child = entry_pfn(u->value);
	if (hyp_frame_type(child) == HYP_FRAME_NONE)
		record_update(HYP_UNANNOUNCED_TABLE, u, child);
	else if (linear_leaf(child) & _PAGE_RW)
		record_update(HYP_WRITABLE_TABLE, u, child);
}

/* A leaf (4 KiB, or a large page of 2^shift bytes) must not map a table
 * frame writable, nor one of the hypervisor's own frames (recorded as kind 1
 * too: docs/xen.md). */
static void audit_leaf(const struct update *u, unsigned shift)
{
	if ((u->value & (_PAGE_PRESENT | _PAGE_RW)) != (_PAGE_PRESENT | _PAGE_RW))
		return;
	u32 pages = 1u << (shift - PAGE_SHIFT);
	u32 first = entry_pfn(u->value) & ~(pages - 1);
	for (u32 pfn = first; pfn < first + pages; pfn++) {
		if (hyp_frame_type(pfn) != HYP_FRAME_NONE || hyp_own_frame(pfn)) {
			record_update(HYP_WRITABLE_TABLE, u, pfn);
			return;
		}
	}
}

/* A pmd page fit for PDPT slot 3: it holds the area chunks bit for bit. */
static bool holds_hypervisor_area(u32 pmd_pfn)
{
	const pteval_t *t = table(pmd_pfn);
	if (!t)
		return false;
	for (unsigned i = 0; i < HYP_AREA_CHUNKS; i++)
		if (t[HYP_AREA_FIRST + i] != hyp_built_area_entry(i))
			return false;
	return true;
}

/*
 * PAE: a PDPT slot may link a frame nobody announced if it is fit to be an
 * empty pmd page - mapped read-only and no entry present - which is what
 * Xen's type validation asks of a new L2 (the kernel's zap_low_mappings
 * points the user slots at empty_zero_page, which no hook announces). It is
 * typed L2 from then on, so later writes into it are audited. Anything else
 * still needs announcing (kind 3). Only at this level: pte pages must always
 * be announced (alloc_pt), so an unannounced one is never taken on trust.
 */
static bool validate_empty_pmd(u32 pfn)
{
	const pteval_t *t = table(pfn);
	pteval_t leaf = linear_leaf(pfn);
	if (!t || !(leaf & _PAGE_PRESENT) || (leaf & _PAGE_RW))
		return false;
	for (unsigned i = 0; i < HYP_ENTRIES; i++)
		if (t[i] & _PAGE_PRESENT)
			return false;
	hyp_set_frame_type(pfn, HYP_FRAME_L2);
	return true;
}

/* true: perform the update. */
static bool audit_update(const struct update *u)
{
	bool present = u->value & _PAGE_PRESENT;

	switch (u->type) {
	case HYP_FRAME_NONE:
		return true; /* not a table (yet): a plain write */
	case HYP_FRAME_L3:
		if (u->idx == HYP_KERNEL_SLOT && !(present && holds_hypervisor_area(entry_pfn(u->value)))) {
			record_update(HYP_KERNEL_PMD_REPLACED, u, entry_pfn(u->value));
			return false;
		}
		if (present && !(hyp_frame_type(entry_pfn(u->value)) == HYP_FRAME_NONE &&
				 validate_empty_pmd(entry_pfn(u->value))))
			audit_link(u);
		return true;
	case HYP_FRAME_L2:
		if (u->idx >= HYP_AREA_FIRST)
			record_update(HYP_AREA_WRITE, u, u->holder);
		if (present && is_large(u->value))
			audit_leaf(u, PMD_SHIFT);
		else if (present)
			audit_link(u);
		return true;
	case HYP_FRAME_L1:
		if (u->holder == hyp_domain.area_pte_pfn[0] || u->holder == hyp_domain.area_pte_pfn[1])
			record_update(HYP_AREA_WRITE, u, u->holder);
		audit_leaf(u, PAGE_SHIFT);
		return true;
	}
	return true;
}

/* The store itself, with CR0.WP already cleared by the caller. */
static void store_entry(void *entry, u64 value)
{
#ifdef CONFIG_X86_PAE
	volatile u32 *w = entry;
	w[1] = (u32)(value >> 32); /* the present bit (low word) last */
	barrier();
	w[0] = (u32)value;
#else
	*(volatile u32 *)entry = (u32)value;
#endif
}

/* Audit one update and, unless refused, store it. WP is off (the dispatcher). */
static bool update_entry(void *entry_va, u64 value)
{
	unsigned long va = (unsigned long)entry_va;
	pteval_t leaf;
	u64 pa;

	hyp_mmu_update_count++;
	if ((va & (sizeof(pteval_t) - 1)) || !walk(va, &leaf, &pa) || pa >> 32)
		crash_domain("mmu_update of an entry that is not mapped", va);
	if (sizeof(pteval_t) == 4 && value >> 32)
		crash_domain("mmu_update with more than 32 bits for a 2-level entry", va);
	struct update u = {
		.entry_pa = (u32)pa,
		.value = value,
		.holder = (u32)(pa >> PAGE_SHIFT),
		.type = hyp_frame_type((u32)(pa >> PAGE_SHIFT)),
		.idx = (unsigned)(pa & ~PAGE_MASK) / sizeof(pteval_t),
	};
	if (!audit_update(&u))
		return false;
	store_entry(entry_va, value);
	return true;
}

int hyp_mmu_update(void *entry_va, u64 value)
{
	return update_entry(entry_va, value) ? 0 : -1;
}

/* One hypercall (one WP toggle) for the lot: in TCG each toggle flushes the
 * whole TLB. */
unsigned hyp_mmu_update_batch(const struct mmu_update *req, unsigned count)
{
	unsigned refused = 0;
#ifdef MUTANT_AUDIT_NO_BATCH
	/* mutant: the batch is trusted, counted and stored as it comes */
	for (unsigned i = 0; i < count; i++, hyp_mmu_update_count++)
		store_entry(req[i].ptr, req[i].val);
#else
	for (unsigned i = 0; i < count; i++)
		refused += !update_entry(req[i].ptr, req[i].val);
#endif
	return refused;
}

void hyp_new_baseptr(unsigned long pa)
{
	u32 pfn = pa >> PAGE_SHIFT;
	if (pa & ~PAGE_MASK)
		crash_domain("new_baseptr of an address that is not a page", pa);
	enum hyp_frame_type type = hyp_frame_type(pfn);
	if (type != HYP_FRAME_NONE && type != HYP_ROOT_TYPE)
		crash_domain("new_baseptr of a table that is not a root", pa);
	/* A PAE root is never announced: loading it makes it one (pinning
	 * checks that it is read-only). */
	hyp_set_frame_type(pfn, HYP_ROOT_TYPE);
	write_cr3(pa);
}

void hyp_announce(u32 pfn, enum hyp_table_level level)
{
	if (level != HYP_TABLE_PTE && level != HYP_TABLE_PMD)
		crash_domain("announce of an unknown table level", level);
	if (pfn >= TRACKED_FRAMES)
		crash_domain("announce of a frame beyond 4 GiB", (u64)pfn << PAGE_SHIFT);
	hyp_set_frame_type(pfn, (enum hyp_frame_type)level);
}

void hyp_invlpg(unsigned long va)
{
	asm volatile("invlpg (%0)" : : "r"(va) : "memory");
}

/* Pin-time: the frames of the tree, each once: the root, its pmd pages, then
 * the PTE pages they link, in table order. */
#ifdef CONFIG_X86_PAE
#define PIN_FRAMES_MAX (1 + PTRS_PER_PGD + PTRS_PER_PGD * PTRS_PER_PMD)
#else
#define PIN_FRAMES_MAX (1 + PTRS_PER_PGD)
#endif
static u32 pin_frames[PIN_FRAMES_MAX];
static unsigned pin_count;

/*
 * Frames an earlier pin has validated. As Xen keeps a validated page's type
 * while it is in use, a later pin does not look at them again: the second
 * pagetable shares the kernel's pte pages (and the hypervisor's A and B),
 * which the first pin checked and every mmu_update since has been audited
 * on. Tables only live below xen_map_end (the hypervisor reads them there);
 * a frame beyond this bitmap would simply be checked at every pin.
 */
#define VALIDATED_FRAMES (1u << 15) /* 128 MiB */
static u32 validated[VALIDATED_FRAMES / 32];

static bool is_validated(u32 pfn)
{
	return pfn < VALIDATED_FRAMES && (validated[pfn / 32] >> (pfn % 32) & 1);
}

static void set_validated(u32 pfn)
{
	if (pfn < VALIDATED_FRAMES)
		validated[pfn / 32] |= 1u << (pfn % 32);
}

static void pin_add(u32 pfn)
{
	for (unsigned i = 0; i < pin_count; i++)
		if (pin_frames[i] == pfn)
			return;
	pin_frames[pin_count++] = pfn;
}

static void pin_add_pte_pages(u32 dir)
{
	const pteval_t *t = table(dir);
	if (!t)
		crash_domain("pin of a tree with a table beyond the hypervisor's mapping",
			     (u64)dir << PAGE_SHIFT);
	for (unsigned i = 0; i < HYP_ENTRIES; i++)
		if ((t[i] & _PAGE_PRESENT) && !is_large(t[i]))
			pin_add(entry_pfn(t[i]));
}

/* Pin-time kind 2: the directory's area chunks, then PTE pages A and B, as
 * built - each of the three only if no earlier pin validated it. */
static void pin_check_area(u32 dir, u32 dir_va)
{
	const pteval_t *t = table(dir);
	for (unsigned i = 0; i < HYP_AREA_CHUNKS && !is_validated(dir); i++) {
		unsigned idx = HYP_AREA_FIRST + i;
		if (t[idx] != hyp_built_area_entry(i))
			record(HYP_AREA_WRITE, ((u32)dir << PAGE_SHIFT) + idx * sizeof(pteval_t), t[idx],
			       (u32)dir << PAGE_SHIFT, dir_va + (idx << PMD_SHIFT));
	}
	const u32 base_va[2] = { HYPERVISOR_VIRT_START, HYP_LAST_CHUNK_VA };
	for (unsigned which = 0; which < 2; which++) {
		if (is_validated(hyp_domain.area_pte_pfn[which]))
			continue;
		u32 pa = hyp_domain.area_pte_pfn[which] << PAGE_SHIFT;
		const pteval_t *pte = table(hyp_domain.area_pte_pfn[which]);
		for (unsigned i = 0; i < HYP_ENTRIES; i++)
			if (pte[i] != hyp_built_area_pte(which, i))
				record(HYP_AREA_WRITE, pa + i * sizeof(pteval_t), pte[i], pa,
				       base_va[which] + (i << PAGE_SHIFT));
		set_validated(hyp_domain.area_pte_pfn[which]); /* looked at, in the tree or not */
	}
}

void hyp_pin(u32 pfn)
{
	hyp_pin_count++;
	const pteval_t *root = table(pfn);
	enum hyp_frame_type type = hyp_frame_type(pfn);
	if (!root || (type != HYP_ROOT_TYPE && type != HYP_FRAME_NONE))
		crash_domain("pin of a frame that is not a root", (u64)pfn << PAGE_SHIFT);
	/* A frame that is no table yet becomes a root, as pinning types it in
	 * Xen (a PAE root is never announced; a second pgd may be pinned
	 * before the CR3 load). */
	hyp_set_frame_type(pfn, HYP_ROOT_TYPE);
#ifdef MUTANT_AUDIT_NO_PIN
	return; /* mutant: pinned without looking at the tree */
#endif

	/* Kind 1: every table frame of the tree must be mapped read-only. */
	pin_count = 0;
	pin_add(pfn);
#ifdef CONFIG_X86_PAE
	for (unsigned s = 0; s < PTRS_PER_PGD; s++)
		if (root[s] & _PAGE_PRESENT)
			pin_add(entry_pfn(root[s]));
	for (unsigned i = 1, n = pin_count; i < n; i++)
		pin_add_pte_pages(pin_frames[i]);
#else
	pin_add_pte_pages(pfn);
#endif
	for (unsigned i = 0; i < pin_count; i++) {
		if (is_validated(pin_frames[i]))
			continue;
		pteval_t leaf = linear_leaf(pin_frames[i]);
		if (leaf & _PAGE_RW)
			record(HYP_WRITABLE_TABLE, 0, leaf, pin_frames[i] << PAGE_SHIFT,
			       PAGE_OFFSET + (pin_frames[i] << PAGE_SHIFT));
	}

	/* Kind 2: the hypervisor's area as built. */
#ifdef CONFIG_X86_PAE
	pteval_t slot = root[HYP_KERNEL_SLOT];
	if (!(slot & _PAGE_PRESENT)) { /* the whole area is gone */
		if (!is_validated(pfn))
			record(HYP_AREA_WRITE, ((u32)pfn << PAGE_SHIFT) + HYP_KERNEL_SLOT * sizeof(pteval_t),
			       slot, pfn << PAGE_SHIFT, (u32)HYP_KERNEL_SLOT << PGDIR_SHIFT);
	} else {
		pin_check_area(entry_pfn(slot), (u32)HYP_KERNEL_SLOT << PGDIR_SHIFT);
	}
#else
	pin_check_area(pfn, 0);
#endif
	for (unsigned i = 0; i < pin_count; i++)
		set_validated(pin_frames[i]);
}

static const char *const kind_names[] = {
	[HYP_WRITABLE_TABLE] = "WRITABLE_TABLE",
	[HYP_AREA_WRITE] = "HYP_AREA_WRITE",
	[HYP_UNANNOUNCED_TABLE] = "UNANNOUNCED_TABLE",
	[HYP_KERNEL_PMD_REPLACED] = "KERNEL_PMD_REPLACED",
};

/* At the domain's exit, whatever the exit: the record, for a person to read. */
void hyp_report(void)
{
	u32 n = hyp_violation_count;
	u32 shown = n < HYP_REPORT_LINES ? n : HYP_REPORT_LINES;
	printk("xen violations count=%u shown=%u mmu_updates=%u\n", n, shown, hyp_mmu_update_count);
	for (u32 i = 0; i < shown; i++) {
		const struct hyp_violation *v = &hyp_violations[i];
		printk("xen violation n=%u kind=%u name=%s entry_pa=0x%08x value=0x%llx frame=0x%08x "
		       "va=0x%08x\n",
		       i, v->kind, v->kind < ARRAY_SIZE(kind_names) ? kind_names[v->kind] : "?",
		       v->entry_pa, (unsigned long long)v->value, v->frame, v->va);
	}
}

/* The hypervisor's own exits (crash_domain) report too; the domain's come
 * through __HYPERVISOR_domain_exit. guest_exit_notifier is the hypervisor's
 * private copy of guest/lib's. */
void hyp_mm_start(void)
{
	guest_exit_notifier = hyp_report;
}
