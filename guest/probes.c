/* Placeholder: replaced by the probes (issue 9). */
#include "work.h"
void run_probes(void) { }
