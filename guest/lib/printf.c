/*
 * printk: the subset of printf the log needs. %s %c %d %u %x %p, the l and ll
 * length modifiers, '0' padding and a width. No division of 64-bit values
 * (there is no libgcc): hex is printed by shifting, decimals are 32-bit.
 */
#include <stdarg.h>
#include "guest.h"

static void put_str(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void put_padded(const char *digits, int len, int width, char pad)
{
	for (; width > len; width--)
		serial_putc(pad);
	while (len--)
		serial_putc(*digits++);
}

static void put_hex(u64 v, int width, char pad)
{
	char buf[16];
	int n = 16;
	do {
		buf[--n] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v);
	put_padded(buf + n, 16 - n, width, pad);
}

static void put_dec(u32 v, bool negative, int width, char pad)
{
	char buf[11];
	int n = 11;
	do {
		buf[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (negative)
		buf[--n] = '-';
	put_padded(buf + n, 11 - n, width, pad);
}

int printk(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			serial_putc(*fmt);
			continue;
		}
		char pad = ' ';
		int width = 0, longs = 0;
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			longs++;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			put_str(s ? s : "(null)");
			break;
		}
		case 'c':
			serial_putc((char)va_arg(ap, int));
			break;
		case 'd': {
			int v = va_arg(ap, int);
			put_dec(v < 0 ? -(u32)v : (u32)v, v < 0, width, pad);
			break;
		}
		case 'u':
			put_dec(va_arg(ap, u32), false, width, pad);
			break;
		case 'x':
			put_hex(longs >= 2 ? va_arg(ap, u64) : va_arg(ap, u32), width, pad);
			break;
		case 'p':
			put_str("0x");
			put_hex((u32)va_arg(ap, void *), 8, '0');
			break;
		case '%':
			serial_putc('%');
			break;
		default: /* unknown conversion: show it rather than guess */
			serial_putc('%');
			serial_putc(*fmt);
			break;
		}
		if (!*fmt)
			break;
	}
	va_end(ap);
	return 0;
}
