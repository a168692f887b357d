/* Fixed-width types for a freestanding i386 guest (gcc -m32: long is 32 bits). */
#ifndef GUEST_TYPES_H
#define GUEST_TYPES_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define __noinline __attribute__((noinline, noclone))
/*
 * The harness's breakpoints (docs/guest-contract.md) sit on a page of their own:
 * QEMU's TCG runs every instruction of a page holding a breakpoint as a
 * one-instruction block, so a breakpoint next to a hot loop slows it ~6x.
 * Callees of a stop point stay out of line for the same reason.
 */
#define __stop_point __attribute__((noinline, noclone, section(".text.stop_points")))
#define __noreturn __attribute__((noreturn))
#define __aligned(n) __attribute__((aligned(n)))
#define __section(s) __attribute__((section(s)))
#define __printf(a, b) __attribute__((format(printf, a, b)))

/* Compiler barrier: nothing is moved across it, and the function containing it
 * cannot be treated as side-effect free. */
#define barrier() asm volatile("" ::: "memory")

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
