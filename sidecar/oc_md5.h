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

/* How many one-block messages oc_md5_word0_many hashes side by side. */
#define OC_MD5_LANES 8

/* The longest message MD5 hashes in one block: the 0x80 byte and the
 * 8-byte length must fit in the same 64 bytes. */
#define OC_MD5_ONE_BLOCK 55

/* out[i] = oc_md5_word(digest of msg[i] (len[i] bytes), 0) for i < n: the
 * word ketama places a key by. Why: placing a get's 100 keys hashes 100
 * short keys, and MD5's 64 dependent steps leave most of a core idle;
 * messages of at most OC_MD5_ONE_BLOCK bytes are hashed OC_MD5_LANES at a
 * time in vector registers (GCC/Clang vector extensions: SSE2 on x86-64,
 * NEON on arm64; one by one on a compiler without them), longer ones one
 * by one. The answers are oc_md5's, whatever the mix of lengths. */
void oc_md5_word0_many(size_t n, const char *const *msg, const size_t *len,
                       uint32_t *out);

#endif
