/* ASan's defaults for the fuzz targets (ASAN_OPTIONS in the environment still overrides them).
 *
 * malloc_context_size=0: ASan otherwise unwinds and stores the stack of every allocation, 7% of the memory
 * target's time (the request path allocates a few arrays per request). A report still names the access
 * that failed and the heap block it hit; to see where that block was allocated and freed, run the crash input
 * again with ASAN_OPTIONS=malloc_context_size=30. */
const char *__asan_default_options(void) { return "malloc_context_size=0"; }
