/*
 * oc_md5: the MD5 digest (RFC 1321), for placing keys on the memcached pool
 * exactly as libmemcached's weighted ketama does (oc_place). Not for
 * security: ketama uses MD5 as a well-spread hash, and so do we.
 *
 * Why our own: libmemcached hashes each key through libhashkit's MD5 and a
 * layer of calls around it, about 1,200 instructions a key, a fifth of a
 * hit's CPU in objcached; this one is unrolled and allocates nothing.
 *
 * Contract: pure; any length; no state.
 */
#ifndef OC_MD5_H
#define OC_MD5_H

#include <stddef.h>
#include <stdint.h>

#define OC_MD5_LEN 16

void oc_md5(const void *data, size_t len, uint8_t out[OC_MD5_LEN]);

/* The first four bytes of the digest, read little-endian: the 32-bit value
 * ketama places a key (or a server point, with bytes 4i..4i+3) by. */
uint32_t oc_md5_word(const uint8_t digest[OC_MD5_LEN], unsigned i);

#endif
