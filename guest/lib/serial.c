/* COM1 (0x3f8), polled, 115200 8N1: the guest's log. */
#include "io.h"
#include "guest.h"

#define COM1 0x3f8
#define UART_THR 0 /* transmit holding register */
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LSR_THRE 0x20
#define UART_LCR_DLAB 0x80

void serial_init(void)
{
	outb(0x00, COM1 + UART_IER);       /* no interrupts: we poll */
	outb(UART_LCR_DLAB, COM1 + UART_LCR);
	outb(1, COM1 + 0);                 /* divisor 1 = 115200 baud */
	outb(0, COM1 + 1);
	outb(0x03, COM1 + UART_LCR);       /* 8N1 */
	outb(0x07, COM1 + UART_FCR);       /* FIFO on and cleared */
	outb(0x03, COM1 + UART_MCR);       /* DTR, RTS */
}

void serial_putc(char c)
{
	/* Bounded wait: a missing UART must not hang the guest. */
	for (int spin = 0; spin < 100000 && !(inb(COM1 + UART_LSR) & UART_LSR_THRE); spin++)
		;
	outb((u8)c, COM1 + UART_THR);
}
