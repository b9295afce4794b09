/*
 * libdeflate as a Swift module: whole-buffer DEFLATE, zlib and gzip
 * decompression, used to inflate the chunks of gzip-compressed HDF5
 * datasets on several threads at once (libhdf5 inflates one chunk at a
 * time, under its global lock, with zlib).
 */
#ifndef GRADSCOPE_CDEFLATE_SHIM_H
#define GRADSCOPE_CDEFLATE_SHIM_H

#include <libdeflate.h>

#endif
