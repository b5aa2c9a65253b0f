#include "oc_md5.h"

#include <string.h>

/* K[i] = floor(|sin(i + 1)| * 2^32), RFC 1321 section 3.4 */
static const uint32_t K[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu, 0xf57c0fafu, 0x4787c62au,
    0xa8304613u, 0xfd469501u, 0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u, 0xf61e2562u, 0xc040b340u,
    0x265e5a51u, 0xe9b6c7aau, 0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu, 0xa9e3e905u, 0xfcefa3f8u,
    0x676f02d9u, 0x8d2a4c8au, 0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u, 0x289b7ec6u, 0xeaa127fau,
    0xd4ef3085u, 0x04881d05u, 0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u, 0x655b59c3u, 0x8f0ccc92u,
    0xffeff47du, 0x85845dd1u, 0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

static uint32_t le32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, 4); /* one load */
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
#endif
}

/* One step: a = b + ((a + f(b, c, d) + X[k] + K[i]) <<< s). Macros, not
 * functions, so the same text serves uint32_t and the vector type below
 * (GCC and Clang apply ^ & | ~ + and shifts by a constant lane by lane,
 * and widen the scalar K[i]). */
#define ROTL(x, s) (((x) << (s)) | ((x) >> (32u - (s))))
#define STEP(f, a, b, c, d, k, i, s)                                                     \
    do {                                                                                 \
        (a) = (b) + ROTL((a) + f((b), (c), (d)) + X[k] + K[i], s);                       \
    } while (0)
#define F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))

/* All 64 steps, written out: constant indexes and shifts let the compiler
 * keep everything in registers (a loop costs half as much again). */
#define MD5_64_STEPS()                                                                   \
    do {                                                                                 \
        STEP(F, a, b, c, d, 0, 0, 7);                                                    \
        STEP(F, d, a, b, c, 1, 1, 12);                                                   \
        STEP(F, c, d, a, b, 2, 2, 17);                                                   \
        STEP(F, b, c, d, a, 3, 3, 22);                                                   \
        STEP(F, a, b, c, d, 4, 4, 7);                                                    \
        STEP(F, d, a, b, c, 5, 5, 12);                                                   \
        STEP(F, c, d, a, b, 6, 6, 17);                                                   \
        STEP(F, b, c, d, a, 7, 7, 22);                                                   \
        STEP(F, a, b, c, d, 8, 8, 7);                                                    \
        STEP(F, d, a, b, c, 9, 9, 12);                                                   \
        STEP(F, c, d, a, b, 10, 10, 17);                                                 \
        STEP(F, b, c, d, a, 11, 11, 22);                                                 \
        STEP(F, a, b, c, d, 12, 12, 7);                                                  \
        STEP(F, d, a, b, c, 13, 13, 12);                                                 \
        STEP(F, c, d, a, b, 14, 14, 17);                                                 \
        STEP(F, b, c, d, a, 15, 15, 22);                                                 \
        STEP(G, a, b, c, d, 1, 16, 5);                                                   \
        STEP(G, d, a, b, c, 6, 17, 9);                                                   \
        STEP(G, c, d, a, b, 11, 18, 14);                                                 \
        STEP(G, b, c, d, a, 0, 19, 20);                                                  \
        STEP(G, a, b, c, d, 5, 20, 5);                                                   \
        STEP(G, d, a, b, c, 10, 21, 9);                                                  \
        STEP(G, c, d, a, b, 15, 22, 14);                                                 \
        STEP(G, b, c, d, a, 4, 23, 20);                                                  \
        STEP(G, a, b, c, d, 9, 24, 5);                                                   \
        STEP(G, d, a, b, c, 14, 25, 9);                                                  \
        STEP(G, c, d, a, b, 3, 26, 14);                                                  \
        STEP(G, b, c, d, a, 8, 27, 20);                                                  \
        STEP(G, a, b, c, d, 13, 28, 5);                                                  \
        STEP(G, d, a, b, c, 2, 29, 9);                                                   \
        STEP(G, c, d, a, b, 7, 30, 14);                                                  \
        STEP(G, b, c, d, a, 12, 31, 20);                                                 \
        STEP(H, a, b, c, d, 5, 32, 4);                                                   \
        STEP(H, d, a, b, c, 8, 33, 11);                                                  \
        STEP(H, c, d, a, b, 11, 34, 16);                                                 \
        STEP(H, b, c, d, a, 14, 35, 23);                                                 \
        STEP(H, a, b, c, d, 1, 36, 4);                                                   \
        STEP(H, d, a, b, c, 4, 37, 11);                                                  \
        STEP(H, c, d, a, b, 7, 38, 16);                                                  \
        STEP(H, b, c, d, a, 10, 39, 23);                                                 \
        STEP(H, a, b, c, d, 13, 40, 4);                                                  \
        STEP(H, d, a, b, c, 0, 41, 11);                                                  \
        STEP(H, c, d, a, b, 3, 42, 16);                                                  \
        STEP(H, b, c, d, a, 6, 43, 23);                                                  \
        STEP(H, a, b, c, d, 9, 44, 4);                                                   \
        STEP(H, d, a, b, c, 12, 45, 11);                                                 \
        STEP(H, c, d, a, b, 15, 46, 16);                                                 \
        STEP(H, b, c, d, a, 2, 47, 23);                                                  \
        STEP(I, a, b, c, d, 0, 48, 6);                                                   \
        STEP(I, d, a, b, c, 7, 49, 10);                                                  \
        STEP(I, c, d, a, b, 14, 50, 15);                                                 \
        STEP(I, b, c, d, a, 5, 51, 21);                                                  \
        STEP(I, a, b, c, d, 12, 52, 6);                                                  \
        STEP(I, d, a, b, c, 3, 53, 10);                                                  \
        STEP(I, c, d, a, b, 10, 54, 15);                                                 \
        STEP(I, b, c, d, a, 1, 55, 21);                                                  \
        STEP(I, a, b, c, d, 8, 56, 6);                                                   \
        STEP(I, d, a, b, c, 15, 57, 10);                                                 \
        STEP(I, c, d, a, b, 6, 58, 15);                                                  \
        STEP(I, b, c, d, a, 13, 59, 21);                                                 \
        STEP(I, a, b, c, d, 4, 60, 6);                                                   \
        STEP(I, d, a, b, c, 11, 61, 10);                                                 \
        STEP(I, c, d, a, b, 2, 62, 15);                                                  \
        STEP(I, b, c, d, a, 9, 63, 21);                                                  \
    } while (0)

static void block(uint32_t st[4], const uint8_t *p)
{
    uint32_t X[16];
    for (int i = 0; i < 16; i++)
        X[i] = le32(p + 4 * i);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    MD5_64_STEPS();
    st[0] += a, st[1] += b, st[2] += c, st[3] += d;
}

/* The message's length in bits, little-endian, in the last 8 bytes of the
 * n-byte tail; returns the tail. */
static const uint8_t *tail_with_length(uint8_t *tail, size_t n, uint64_t bits)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(tail + n - 8, &bits, 8);
#else
    for (int i = 0; i < 8; i++)
        tail[n - 8 + (size_t)i] = (uint8_t)(bits >> (8 * i));
#endif
    return tail;
}

void oc_md5(const void *data, size_t len, uint8_t out[OC_MD5_LEN])
{
    uint32_t st[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
    const uint8_t *p = data;
    size_t left = len;
    for (; left >= 64; p += 64, left -= 64)
        block(st, p);
    /* the tail, 0x80, zeros, and the length in bits (little-endian) */
    uint8_t tail[128];
    size_t n = left < 56 ? 64 : 128;
    if (left)
        memcpy(tail, p, left);
    tail[left] = 0x80;
    memset(tail + left + 1, 0, n - 8 - left - 1);
    uint64_t bits = (uint64_t)len * 8;
    block(st, tail_with_length(tail, n, bits));
    if (n == 128)
        block(st, tail + 64);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, st, OC_MD5_LEN);
#else
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(st[i] >> (8 * j));
#endif
}

uint32_t oc_md5_word(const uint8_t digest[OC_MD5_LEN], unsigned i)
{
    return le32(digest + 4 * (i & 3u));
}

#if defined(__GNUC__) || defined(__clang__)
typedef uint32_t md5_lanes_t __attribute__((vector_size(4 * OC_MD5_LANES)));

/* Where the CPU has AVX2 (most x86-64 servers since 2013), one instruction
 * does all eight lanes; elsewhere two SSE2 ones. GCC picks at load time
 * (an ifunc: glibc), so the binary still runs on any x86-64. Not under
 * ASan (its checks cannot run in the resolver, before it is set up);
 * OC_MD5_NO_CLONES: the baseline only (a unit test of it). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                   \
    defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(OC_MD5_NO_CLONES)
#define LANES_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LANES_CLONES
#endif

/* The messages of lanes[0..n) (n <= OC_MD5_LANES, each at most
 * OC_MD5_ONE_BLOCK bytes), padded as oc_md5 pads them, hashed side by side:
 * word j of lane l's block is X[j][l]. */
LANES_CLONES static void lanes_word0(const char *const *msg, const size_t *len,
                                     const size_t *lanes, size_t n, uint32_t *out)
{
    md5_lanes_t X[16];
    for (int j = 0; j < 16; j++)
        X[j] = (md5_lanes_t){0}; /* vector stores; a memset here was rep stos */
    for (size_t l = 0; l < n; l++) {
        /* Each word straight from the key, not through a padded copy: a
         * word loaded from bytes just stored by memcpy and single-byte
         * stores cannot be forwarded from them and waits (perf: a quarter
         * of this function's time). */
        const uint8_t *k = (const uint8_t *)msg[lanes[l]];
        size_t m = len[lanes[l]], full = m / 4, j;
        for (j = 0; j < full; j++)
            X[j][l] = le32(k + 4 * j);
        uint32_t last = 0x80u << (8 * (m % 4)); /* the key's last bytes, then 0x80 */
        for (size_t i = 0; i < m % 4; i++)
            last |= (uint32_t)k[4 * full + i] << (8 * i);
        X[full][l] = last;
        X[14][l] = (uint32_t)m * 8; /* the length in bits: m <= 55, one word */
    }
    md5_lanes_t a = {0}, b = {0}, c = {0}, d = {0};
    a += 0x67452301u, b += 0xefcdab89u, c += 0x98badcfeu, d += 0x10325476u;
    MD5_64_STEPS();
    a += 0x67452301u;
    uint32_t w0[OC_MD5_LANES];
    memcpy(w0, &a, sizeof(w0));
    for (size_t l = 0; l < n; l++)
        out[lanes[l]] = w0[l];
}
#else
static void lanes_word0(const char *const *msg, const size_t *len, const size_t *lanes,
                        size_t n, uint32_t *out)
{
    for (size_t l = 0; l < n; l++) {
        uint8_t d[OC_MD5_LEN];
        oc_md5(msg[lanes[l]], len[lanes[l]], d);
        out[lanes[l]] = oc_md5_word(d, 0);
    }
}
#endif

void oc_md5_word0_many(size_t n, const char *const *msg, const size_t *len, uint32_t *out)
{
    size_t lanes[OC_MD5_LANES], k = 0;
    for (size_t i = 0; i < n; i++) {
        if (len[i] > OC_MD5_ONE_BLOCK) {
            uint8_t d[OC_MD5_LEN];
            oc_md5(msg[i], len[i], d);
            out[i] = oc_md5_word(d, 0);
            continue;
        }
        lanes[k++] = i;
        if (k == OC_MD5_LANES) {
            lanes_word0(msg, len, lanes, k, out);
            k = 0;
        }
    }
    if (k > 0)
        lanes_word0(msg, len, lanes, k, out);
}
