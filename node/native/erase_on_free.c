/*
 * erase_on_free: every heap block is zeroed before glibc takes it back.
 *
 * Preloaded into the node (LD_PRELOAD, by node/hygiene.py's re-exec) so that request data --
 * activations, K/V on their way to the pool, Python str/bytes of prompts and outputs (CPython
 * runs with PYTHONMALLOC=malloc) -- does not survive in freed memory. It interposes the two
 * calls through which a block's contents are given back to the allocator:
 *
 *   free(p)          zeroes the block's whole usable size, then frees it.
 *   realloc(p, n)    shrinking: zeroes the tail past n, then lets glibc shrink in place
 *                    (glibc never moves a block it shrinks: the tail it splits off was zeroed);
 *                    growing: allocates anew, copies, and zeroes and frees the old block as
 *                    free does (glibc could otherwise move it and keep the old copy unerased).
 *   reallocarray     the same as realloc after the overflow check.
 *
 * Everything else (malloc, calloc, the aligned allocators, malloc_usable_size) stays glibc's,
 * so sizes and ownership are glibc's own. glibc calls free and realloc through the dynamic
 * symbol table for its own allocations too (it supports replacing malloc), so those are
 * zeroed as well. Unlike glibc's malloc.perturb tunable, which is skipped by the per-thread
 * cache (and so needs it turned off), this keeps glibc's fast paths.
 *
 * explicit_bzero, not memset: a store to memory about to be freed is dead to the compiler.
 * hushcc_erase_on_free_abi is a marker the node checks to know it was preloaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <string.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);

const int hushcc_erase_on_free_abi = 1;

static void erase_and_free(void *ptr, size_t usable) {
    explicit_bzero(ptr, usable);
    __libc_free(ptr);
}

void free(void *ptr) {
    if (ptr != NULL) {
        erase_and_free(ptr, malloc_usable_size(ptr));
    }
}

void *realloc(void *ptr, size_t size) {
    if (ptr == NULL) {
        return __libc_malloc(size);
    }
    if (size == 0) {  /* glibc frees and returns NULL */
        free(ptr);
        return NULL;
    }
    size_t usable = malloc_usable_size(ptr);
    if (size <= usable) {
        explicit_bzero((char *)ptr + size, usable - size);
        return __libc_realloc(ptr, size);
    }
    void *moved = __libc_malloc(size);
    if (moved == NULL) {  /* errno is ENOMEM; the old block stays valid, as realloc's contract */
        return NULL;
    }
    memcpy(moved, ptr, usable);
    erase_and_free(ptr, usable);  /* its usable size is known: no second lookup */
    return moved;
}

void *reallocarray(void *ptr, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(ptr, total);
}
