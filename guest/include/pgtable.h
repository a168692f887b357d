/*
 * Page-table entries and geometry, named as in Linux 2.6.22 include/asm-i386
 * (kernel-facts.md sections 1-2). CONFIG_X86_PAE selects the 3-level format.
 */
#ifndef GUEST_PGTABLE_H
#define GUEST_PGTABLE_H

#include "types.h"
#include "page.h"

#define _PAGE_PRESENT 0x001
#define _PAGE_RW 0x002
#define _PAGE_USER 0x004
#define _PAGE_PWT 0x008
#define _PAGE_PCD 0x010
#define _PAGE_ACCESSED 0x020
#define _PAGE_DIRTY 0x040
#define _PAGE_PSE 0x080
#define _PAGE_GLOBAL 0x100

#define _PAGE_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY)
#define _KERNPG_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)

#ifdef CONFIG_X86_PAE
typedef u64 pteval_t;
#define _PAGE_NX (1ULL << 63)
#define PGDIR_SHIFT 30
#define PTRS_PER_PGD 4
#define PMD_SHIFT 21
#define PTRS_PER_PMD 512
#define PTRS_PER_PTE 512
#else
typedef u32 pteval_t;
#define _PAGE_NX 0
#define PGDIR_SHIFT 22
#define PTRS_PER_PGD 1024
#define PMD_SHIFT 22 /* the middle level is folded into the pgd */
#define PTRS_PER_PMD 1
#define PTRS_PER_PTE 1024
#endif

#define PGDIR_SIZE (1UL << PGDIR_SHIFT)
#define PMD_SIZE (1UL << PMD_SHIFT)
#define PMD_MASK (~(PMD_SIZE - 1))
#define USER_PTRS_PER_PGD (PAGE_OFFSET / PGDIR_SIZE)
#define KERNEL_PGD_PTRS (PTRS_PER_PGD - USER_PTRS_PER_PGD)

#define _PAGE_KERNEL_EXEC (_PAGE_PRESENT | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED)
#define _PAGE_KERNEL (_PAGE_KERNEL_EXEC | _PAGE_NX)

/* Each level is its own struct type so a pte can't be stored as a pmd by mistake. */
typedef struct { pteval_t pte; } pte_t;
typedef struct { pteval_t pmd; } pmd_t;
typedef struct { pteval_t pgd; } pgd_t;
typedef struct { pgd_t pgd; } pud_t; /* always folded on i386 */
typedef struct { pteval_t pgprot; } pgprot_t;

#define pte_val(x) ((x).pte)
#define pmd_val(x) ((x).pmd)
#define pgd_val(x) ((x).pgd)
#define pud_val(x) (pgd_val((x).pgd))
#define pgprot_val(x) ((x).pgprot)
#define __pte(x) ((pte_t){ (x) })
#define __pmd(x) ((pmd_t){ (x) })
#define __pgd(x) ((pgd_t){ (x) })
#define __pgprot(x) ((pgprot_t){ (x) })

/* Run-time protections: PGE ORs _PAGE_GLOBAL in; NX survives only through
 * __supported_pte_mask (set_nx). */
extern pteval_t __PAGE_KERNEL, __PAGE_KERNEL_EXEC, __supported_pte_mask;
#define PAGE_KERNEL __pgprot(__PAGE_KERNEL)
#define PAGE_KERNEL_EXEC __pgprot(__PAGE_KERNEL_EXEC)
#define PAGE_KERNEL_LARGE __pgprot(__PAGE_KERNEL | _PAGE_PSE)
#define PAGE_KERNEL_LARGE_EXEC __pgprot(__PAGE_KERNEL_EXEC | _PAGE_PSE)

extern pgd_t swapper_pg_dir[PAGE_SIZE / sizeof(pgd_t)];
extern char empty_zero_page[PAGE_SIZE];

#define pgd_index(a) (((a) >> PGDIR_SHIFT) & (PTRS_PER_PGD - 1))
#define pmd_index(a) (((a) >> PMD_SHIFT) & (PTRS_PER_PMD - 1))
#define pte_index(a) (((a) >> PAGE_SHIFT) & (PTRS_PER_PTE - 1))
#define pgd_offset_k(a) (swapper_pg_dir + pgd_index(a))

/* The pud level is folded into the pgd in both modes, so pgd_none() is
 * constant false (asm-generic/pgtable-nopud.h). */
static inline int pgd_none(pgd_t pgd)
{
	(void)pgd;
	return 0;
}

/* 2.6.21's emptiness test: only the low 32 bits are looked at. */
static inline int pmd_none(pmd_t pmd)
{
	return !(unsigned long)pmd_val(pmd);
}

static inline pud_t *pud_offset(pgd_t *pgd, unsigned long addr)
{
	(void)addr;
	return (pud_t *)pgd;
}

static inline pmd_t *pmd_offset(pud_t *pud, unsigned long addr)
{
#ifdef CONFIG_X86_PAE
	/* The table address is below 4 GiB: PAGE_MASK drops NX and the high word. */
	return (pmd_t *)__va((unsigned long)pud_val(*pud) & PAGE_MASK) + pmd_index(addr);
#else
	(void)addr;
	return (pmd_t *)pud; /* 2-level: the pgd entry is the pmd entry */
#endif
}

static inline pte_t *pte_offset_kernel(pmd_t *pmd, unsigned long addr)
{
	return (pte_t *)__va((unsigned long)pmd_val(*pmd) & PAGE_MASK) + pte_index(addr);
}

static inline pte_t pfn_pte(unsigned long pfn, pgprot_t prot)
{
#ifdef CONFIG_X86_PAE
	return __pte((((pteval_t)pfn << PAGE_SHIFT) | pgprot_val(prot)) & __supported_pte_mask);
#else
	return __pte((pfn << PAGE_SHIFT) | pgprot_val(prot));
#endif
}

static inline pmd_t pfn_pmd(unsigned long pfn, pgprot_t prot)
{
#ifdef CONFIG_X86_PAE
	return __pmd((((pteval_t)pfn << PAGE_SHIFT) | pgprot_val(prot)) & __supported_pte_mask);
#else
	return __pmd((pfn << PAGE_SHIFT) | pgprot_val(prot));
#endif
}

/* The pte mapping va under pgd_base, or NULL (pgtable.c). */
pte_t *lookup_address(pgd_t *pgd_base, unsigned long va);

/* Hardware stores, used by the native paravirt backend. A PAE entry is
 * written high word first so that the present bit (low word) comes last. */
static inline void native_write_entry(volatile pteval_t *p, pteval_t v)
{
#ifdef CONFIG_X86_PAE
	volatile u32 *w = (volatile u32 *)p;
	w[1] = (u32)(v >> 32);
	barrier();
	w[0] = (u32)v;
#else
	*p = v;
#endif
}

#endif
