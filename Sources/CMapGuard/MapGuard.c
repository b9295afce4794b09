#define _GNU_SOURCE
#include "CMapGuard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_ACTIVE = 2 };

typedef struct {
    _Atomic int state;
    _Atomic uintptr_t base;
    _Atomic size_t length;
    _Atomic int faulted;
} gs_guard_slot;

static gs_guard_slot slots[GS_MAP_GUARD_SLOTS];
static struct sigaction previous;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int installed = -1;
static uintptr_t page_size = 4096;

/// Hands the signal on as if this handler were not installed.
static void pass_on(int sig, siginfo_t *info, void *context) {
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction != NULL) {
        previous.sa_sigaction(sig, info, context);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler != NULL) {
        previous.sa_handler(sig);
        return;
    }
    // The default action (or ignoring it): put it back; a fault raised by the instruction
    // happens again when it is retried, a signal sent from outside is sent again.
    sigaction(sig, &previous, NULL);
    if (info == NULL || info->si_code <= 0) raise(sig);
}

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    int saved = errno;
    if (info != NULL && info->si_code > 0) {
        uintptr_t address = (uintptr_t)info->si_addr;
        for (int i = 0; i < GS_MAP_GUARD_SLOTS; i++) {
            if (atomic_load_explicit(&slots[i].state, memory_order_acquire) != SLOT_ACTIVE) continue;
            uintptr_t base = atomic_load_explicit(&slots[i].base, memory_order_relaxed);
            size_t length = atomic_load_explicit(&slots[i].length, memory_order_relaxed);
            if (address < base || address - base >= length) continue;
            // The flag first, so that whoever reads the zeros mapped next finds it set.
            atomic_store_explicit(&slots[i].faulted, 1, memory_order_seq_cst);
            uintptr_t start = address & ~(page_size - 1);
            void *zeros = mmap((void *)start, base + length - start, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (zeros == MAP_FAILED) break;
            errno = saved;
            return;
        }
    }
    errno = saved;
    pass_on(sig, info, context);
}

static void install(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) page_size = (uintptr_t)page;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    installed = sigaction(SIGBUS, &action, &previous) == 0 ? 0 : -1;
}

int gs_map_guard_install(void) {
    pthread_once(&once, install);
    return installed;
}

int gs_map_guard_register(void *base, size_t length) {
    if (gs_map_guard_install() != 0) return -1;
    for (int i = 0; i < GS_MAP_GUARD_SLOTS; i++) {
        int expected = SLOT_FREE;
        if (!atomic_compare_exchange_strong(&slots[i].state, &expected, SLOT_CLAIMED)) continue;
        atomic_store_explicit(&slots[i].base, (uintptr_t)base, memory_order_relaxed);
        atomic_store_explicit(&slots[i].length, length, memory_order_relaxed);
        atomic_store_explicit(&slots[i].faulted, 0, memory_order_relaxed);
        atomic_store_explicit(&slots[i].state, SLOT_ACTIVE, memory_order_release);
        return i;
    }
    return -1;
}

void gs_map_guard_unregister(int slot) {
    if (slot < 0 || slot >= GS_MAP_GUARD_SLOTS) return;
    atomic_store_explicit(&slots[slot].state, SLOT_FREE, memory_order_release);
}

int gs_map_guard_faulted(int slot) {
    if (slot < 0 || slot >= GS_MAP_GUARD_SLOTS) return 0;
    return atomic_load_explicit(&slots[slot].faulted, memory_order_seq_cst);
}

int gs_map_guard_active(void) {
    int n = 0;
    for (int i = 0; i < GS_MAP_GUARD_SLOTS; i++) n += atomic_load_explicit(&slots[i].state, memory_order_relaxed) == SLOT_ACTIVE;
    return n;
}
