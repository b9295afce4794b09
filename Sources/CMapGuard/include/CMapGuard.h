#ifndef GRADSCOPE_MAP_GUARD_H
#define GRADSCOPE_MAP_GUARD_H

#include <stddef.h>

/// Read-only file mappings that survive their file shrinking.
///
/// Reading a page of a mapped file that no longer reaches that page raises SIGBUS. A range
/// registered here is guarded: a SIGBUS inside it maps anonymous zero pages over the rest of
/// the range (so the faulting read and every later one see zeros), sets the range's "faulted"
/// flag and returns. A reader checks the flag after using what it read and discards it when set.
/// A SIGBUS anywhere else goes to the handler that was installed before (the Swift runtime's
/// backtracer, or the default action), as if this one were not there.
///
/// The table is fixed (`GS_MAP_GUARD_SLOTS` ranges) and updated with atomics only, so the
/// handler can read it at any moment.

#define GS_MAP_GUARD_SLOTS 1024

/// Installs the SIGBUS handler (once per process; later calls do nothing). 0 on success.
int gs_map_guard_install(void);

/// Guards `length` bytes at `base` (page-aligned). Returns the range's slot, or -1 when the
/// table is full (the caller then does not map).
int gs_map_guard_register(void *base, size_t length);

/// Stops guarding a slot; call before unmapping its range.
void gs_map_guard_unregister(int slot);

/// Whether a SIGBUS hit the slot's range since it was registered.
int gs_map_guard_faulted(int slot);

/// Ranges registered now (for tests).
int gs_map_guard_active(void);

#endif
