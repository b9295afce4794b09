/*
 * A thin C shim over libhdf5 1.10 for Swift.
 *
 * Swift cannot import the macros that name HDF5's global property-list
 * classes and native types (they expand to H5OPEN plus a global), nor the
 * unversioned API names. Each getter below returns one of them. The few
 * functions with callbacks that must live in C (denying external links,
 * walking the error stack into a buffer) are here as well.
 */
#ifndef GRADSCOPE_CHDF5_SHIM_H
#define GRADSCOPE_CHDF5_SHIM_H

#include <hdf5.h>
#include <H5PLpublic.h>
#include <string.h>
#include <stdio.h>

static inline hid_t gs_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t gs_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline hid_t gs_H5S_ALL(void) { return H5S_ALL; }
static inline unsigned gs_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned gs_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline hid_t gs_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t gs_H5P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t gs_H5P_LINK_ACCESS(void) { return H5P_LINK_ACCESS; }
static inline hid_t gs_H5P_DATASET_ACCESS(void) { return H5P_DATASET_ACCESS; }
static inline hid_t gs_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t gs_H5P_DATASET_XFER(void) { return H5P_DATASET_XFER; }
static inline hid_t gs_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }
static inline haddr_t gs_HADDR_UNDEF(void) { return HADDR_UNDEF; }
static inline hsize_t gs_H5S_UNLIMITED(void) { return H5S_UNLIMITED; }
static inline size_t gs_H5T_VARIABLE(void) { return H5T_VARIABLE; }

static inline hid_t gs_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t gs_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t gs_H5T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t gs_H5T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t gs_H5T_NATIVE_INT16(void) { return H5T_NATIVE_INT16; }
static inline hid_t gs_H5T_NATIVE_UINT16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t gs_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t gs_H5T_NATIVE_UINT32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t gs_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t gs_H5T_NATIVE_UINT64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t gs_H5T_C_S1(void) { return H5T_C_S1; }
static inline hid_t gs_H5T_IEEE_F32LE(void) { return H5T_IEEE_F32LE; }
static inline hid_t gs_H5T_IEEE_F32BE(void) { return H5T_IEEE_F32BE; }
static inline hid_t gs_H5T_IEEE_F64LE(void) { return H5T_IEEE_F64LE; }
static inline hid_t gs_H5T_IEEE_F64BE(void) { return H5T_IEEE_F64BE; }
static inline hid_t gs_H5T_STD_I8LE(void) { return H5T_STD_I8LE; }
static inline hid_t gs_H5T_STD_U8LE(void) { return H5T_STD_U8LE; }
static inline hid_t gs_H5T_STD_I16LE(void) { return H5T_STD_I16LE; }
static inline hid_t gs_H5T_STD_U16LE(void) { return H5T_STD_U16LE; }
static inline hid_t gs_H5T_STD_I32LE(void) { return H5T_STD_I32LE; }
static inline hid_t gs_H5T_STD_I32BE(void) { return H5T_STD_I32BE; }
static inline hid_t gs_H5T_STD_I64LE(void) { return H5T_STD_I64LE; }
static inline hid_t gs_H5T_STD_U64LE(void) { return H5T_STD_U64LE; }

/* Stops libhdf5 from printing its error stack to stderr. In thread-safe
 * builds this setting is per thread, so it is applied once on each thread. */
static inline void gs_silence_errors(void) {
    static _Thread_local int silenced = 0;
    if (!silenced) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        silenced = 1;
    }
}

/* Disables loading filter plugins from HDF5_PLUGIN_PATH. */
static inline void gs_disable_plugins(void) { H5PLset_loading_state(0); }
static inline void gs_enable_plugins(void) { H5PLset_loading_state(H5PL_ALL_PLUGIN); }

static herr_t gs_deny_elink_cb(const char *parent_file_name, const char *parent_group_name,
                               const char *child_file_name, const char *child_object_name,
                               unsigned *acc_flags, hid_t fapl_id, void *op_data) {
    (void)parent_file_name; (void)parent_group_name; (void)child_file_name;
    (void)child_object_name; (void)acc_flags; (void)fapl_id; (void)op_data;
    return -1;
}

/* Makes every external-link traversal through this link-access list fail. */
static inline herr_t gs_deny_external_links(hid_t lapl) {
    return H5Pset_elink_cb(lapl, gs_deny_elink_cb, NULL);
}

typedef struct {
    char *buf;
    size_t len;
    size_t used;
    int count;
} gs_error_buffer;

static herr_t gs_error_walk_cb(unsigned n, const H5E_error2_t *err, void *client) {
    gs_error_buffer *eb = (gs_error_buffer *)client;
    (void)n;
    if (eb->used + 4 >= eb->len || err == NULL || err->desc == NULL) return 0;
    int written = snprintf(eb->buf + eb->used, eb->len - eb->used, "%s%s",
                           eb->count > 0 ? "\x1f" : "", err->desc);
    if (written > 0) {
        size_t w = (size_t)written;
        eb->used = (eb->used + w < eb->len) ? eb->used + w : eb->len - 1;
    }
    eb->count += 1;
    return 0;
}

/*
 * Writes the descriptions on the current error stack, innermost first,
 * separated by the byte 0x1f, into buf. Returns how many there were.
 */
static inline int gs_current_error_messages(char *buf, size_t len) {
    if (buf == NULL || len == 0) return 0;
    buf[0] = 0;
    gs_error_buffer eb = { buf, len, 0, 0 };
    hid_t stack = H5Eget_current_stack();
    if (stack < 0) return 0;
    H5Ewalk2(stack, H5E_WALK_UPWARD, gs_error_walk_cb, &eb);
    H5Eclose_stack(stack);
    return eb.count;
}

static inline void gs_clear_errors(void) { H5Eclear2(H5E_DEFAULT); }

#endif
