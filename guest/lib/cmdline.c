/*
 * The multiboot command line: space-separated words. A word without '=' is
 * not a knob (QEMU puts the kernel's file name first) and is ignored. Every
 * key=value word must be a knob of docs/guest-contract.md with a valid value:
 * anything else is a bad command line, so a typo cannot go unnoticed.
 */
#include "guest.h"
#include "setup.h"
#include "smp.h" /* NR_CPUS */
#include "string.h"

#define WORD_MAX 128
#define STR_(x) #x
#define STR(x) STR_(x)

/* Parse an unsigned number: decimal, or hex with 0x. Whole string or fail. */
static int parse_number(const char *s, unsigned base, u64 *out, const char **end)
{
	u64 v = 0;
	int digits = 0;
	if (base == 0) {
		base = 10;
		if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
			base = 16;
			s += 2;
		}
	} else if (base == 16 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
	}
	for (;; s++, digits++) {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (*s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (*s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			break;
		if (d >= base)
			break;
		if (v >> 59)
			return -1; /* too big (checked without a 64-bit division: no libgcc) */
		v = v * base + d;
	}
	*out = v;
	*end = s;
	return digits ? 0 : -1;
}

/* SIZE[K|M|G], as the kernel's memparse() reads it. */
int memparse(const char *s, u64 *out)
{
	const char *end;
	u64 v;
	unsigned shift = 0;
	if (parse_number(s, 0, &v, &end))
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (*end || (shift && v >> (64 - shift)))
		return -1;
	*out = v << shift;
	return 0;
}

static char word[WORD_MAX];

static void copy_word(const char *p, size_t n)
{
	memcpy(word, p, n);
	word[n] = 0;
}

/* The (last) word starting with prefix, copied into word. */
static const char *find_word(const char *cmdline, const char *prefix)
{
	const char *p = cmdline;
	size_t plen = strlen(prefix);
	word[0] = 0;
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		size_t n = 0;
		while (p[n] && p[n] != ' ' && p[n] != '\t')
			n++;
		if (n >= plen && n < sizeof(word) && !strncmp(p, prefix, plen))
			copy_word(p, n);
		p += n;
	}
	return word;
}

static int bad(const char *word, const char *why)
{
	printk("cmdline error word=\"%s\" reason=\"%s\"\n", word, why);
	return -1;
}

static int parse_word(const char *word, struct boot_options *opts)
{
	const char *eq = word;
	while (*eq && *eq != '=')
		eq++;
	if (!*eq)
		return 0;
	size_t klen = (size_t)(eq - word);
	const char *val = eq + 1;
	u64 v;
	const char *end;

#define KEY(k) (klen == sizeof(k) - 1 && !strncmp(word, k, klen))
	if (KEY("mem")) {
		if (memparse(val, &v) || v == 0)
			return bad(word, "mem= needs a size such as 64M");
		opts->have_mem_limit = true;
		opts->mem_limit = v;
	} else if (KEY("reservetop")) {
		/* Beyond 896M it would eat all of lowmem (MAXMEM would wrap). */
		if (memparse(val, &v) || v >= 0x38000000ULL || (v & 0xfff))
			return bad(word, "reservetop= needs a page-aligned size below 896M");
		opts->have_reservetop = true;
		opts->reservetop = (unsigned long)v;
	} else if (KEY("noexec")) {
		if (!strcmp(val, "on"))
			opts->noexec = NOEXEC_ON;
		else if (!strcmp(val, "off"))
			opts->noexec = NOEXEC_OFF;
		else
			return bad(word, "noexec= takes on or off");
	} else if (KEY("pv")) {
		if (!*val || strlen(val) >= sizeof(opts->pv_backend))
			return bad(word, "pv= needs a backend name");
		memcpy(opts->pv_backend, val, strlen(val) + 1); /* checked against the backends later */
	} else if (KEY("pvbug")) {
		if (!strcmp(val, "writable-pt"))
			opts->pvbug = PVBUG_WRITABLE_PT;
		else if (!strcmp(val, "writable-root"))
			opts->pvbug = PVBUG_WRITABLE_ROOT;
		else if (!strcmp(val, "unannounced-pt"))
			opts->pvbug = PVBUG_UNANNOUNCED_PT;
		else if (!strcmp(val, "batch-hv-write"))
			opts->pvbug = PVBUG_BATCH_HV_WRITE;
		else
			return bad(word, "pvbug= takes writable-pt, writable-root, unannounced-pt or "
					 "batch-hv-write");
	} else if (KEY("hang")) {
		if (!strcmp(val, "early"))
			opts->hang = HANG_EARLY;
		else if (!strcmp(val, "late"))
			opts->hang = HANG_LATE;
		else
			return bad(word, "hang= takes early or late");
	} else if (KEY("poison")) {
		/* Bit 0 clear: junk that is never a present entry. */
		if (parse_number(val, 16, &v, &end) || *end || v > 0xffffffffULL || !v || (v & 1))
			return bad(word, "poison= needs a non-zero 32-bit hex pattern with bit 0 clear");
		opts->poison = (u32)v;
	} else if (KEY("smp")) {
		/* CPUs to bring up, the BSP included (QEMU's -smp must offer them). */
		if (parse_number(val, 10, &v, &end) || *end || v < 1 || v > NR_CPUS)
			return bad(word, "smp= needs a CPU count from 1 to " STR(NR_CPUS) " (NR_CPUS)");
		opts->smp_cpus = (u32)v;
	} else if (KEY("fault")) {
		if (parse_number(val, 16, &v, &end) || *end || v > 0xffffffffULL)
			return bad(word, "fault= needs a 32-bit hex address");
		opts->have_fault = true;
		opts->fault_addr = (unsigned long)v;
	} else if (KEY("poke")) {
		if (parse_number(val, 16, &v, &end) || *end || v > 0xffffffffULL || (v & 3))
			return bad(word, "poke= needs a 32-bit hex address, 4-byte aligned");
		opts->have_poke = true;
		opts->poke_addr = (unsigned long)v;
	} else {
		return bad(word, "unknown knob");
	}
#undef KEY
	return 0;
}

/* Knobs that only make sense together, checked once every word is read. */
static int check_combinations(const char *cmdline, const struct boot_options *opts)
{
	bool xen = !strcmp(opts->pv_backend, "xen");
	if (xen && opts->have_reservetop)
		return bad(find_word(cmdline, "reservetop="),
			   "reservetop= is not allowed with pv=xen: the hypervisor sets the top");
	if (xen && *find_word(cmdline, "smp=")) /* any smp= word, smp=1 too */
		return bad(find_word(cmdline, "smp="),
			   "smp= is not modelled under pv=xen: the hypervisor starts VCPUs");
	if (!xen && opts->pvbug != PVBUG_NONE)
		return bad(find_word(cmdline, "pvbug="), "pvbug= needs pv=xen");
	return 0;
}

int parse_boot_options(const char *cmdline, struct boot_options *opts)
{
	const char *p = cmdline;
	opts->smp_cpus = 1; /* the BSP only, unless smp= says more */
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		size_t n = 0;
		while (p[n] && p[n] != ' ' && p[n] != '\t')
			n++;
		if (!n)
			break;
		if (n >= sizeof(word)) {
			printk("cmdline error reason=\"word longer than %u bytes\"\n", (u32)sizeof(word) - 1);
			return -1;
		}
		copy_word(p, n);
		p += n;
		if (parse_word(word, opts))
			return -1;
	}
	return check_combinations(cmdline, opts);
}
