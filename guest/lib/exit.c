/* The only writer of the isa-debug-exit port. */
#include "io.h"
#include "guest.h"
#include "processor.h"

static const char *const exit_names[] = {
	[GUEST_EXIT_PASS] = "pass",
	[GUEST_EXIT_SELFCHECK] = "selfcheck-failed",
	[GUEST_EXIT_EXCEPTION] = "exception",
	[GUEST_EXIT_UNSUPPORTED] = "unsupported-cpu",
	[GUEST_EXIT_BAD_CMDLINE] = "bad-cmdline",
};

void (*guest_exit_notifier)(void);

void __stop_point guest_exit(enum guest_exit_code code)
{
	barrier();
	/* Once only: the notifier may itself fault or BUG and come back here. */
	void (*notify)(void) = guest_exit_notifier;
	guest_exit_notifier = 0;
	if (notify)
		notify();
	printk("exit code=%u %s\n", (u32)code,
	       (u32)code < ARRAY_SIZE(exit_names) ? exit_names[code] : "unknown");
	outl((u32)code, DEBUG_EXIT_PORT);
	/* Still here: QEMU has no isa-debug-exit device. */
	printk("exit device absent: halting\n");
	halt_forever();
}

void guest_bug(const char *file, int line, const char *what)
{
	printk("BUG at %s:%d: %s\n", file, line, what);
	guest_exit(GUEST_EXIT_SELFCHECK);
}
