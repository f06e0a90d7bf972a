/* Marks for bench/stages.py under valgrind's callgrind: collect only while a stage runs.
 *
 * Built by bench/stages.py (gcc -shared) when it runs with --instructions; called through
 * ctypes. Outside valgrind the client requests are a few no-op instructions.
 */
#include <valgrind/callgrind.h>

void owui_bench_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }

void owui_bench_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }

void owui_bench_zero(void) { CALLGRIND_ZERO_STATS; }
