/*
 * lispmesh fast data path: the per-packet work of mesh/xtr.py in C, behind mesh/fastpath.py.
 *
 * inside:  TUN read (virtio-net header, TSO super-packets) -> segment into MSS-sized TCP packets
 *          (full checksums: any LISP ETR can decapsulate and deliver them) -> route lookup ->
 *          policy (egress) -> AEAD seal (RFC 8061 framing: LISP header | IV | ciphertext |
 *          tag) -> UDP GSO send.
 * outside: recvmmsg -> key lookup by (source RLOC, key-id) -> AEAD open -> replay window ->
 *          source-EID and instance-id checks -> policy (ingress) -> TUN write.
 * The network policy (egress after the route lookup, before sealing; ingress before the TUN
 * write) is mesh/policy/'s semantics: rules, a stateful flow table, counters and a flow log.
 *
 * The Python control plane owns every decision: it installs paths (keys, counters, RLOCs),
 * routes (EID prefix -> path) and decap slots; whatever this engine cannot handle (no route,
 * no key, plaintext, control) goes back to Python, which counts it or resolves it. Each call
 * releases the GIL only around system calls and crypto; the tables are only touched with the
 * GIL held, so Python and C never race.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define VNET_HDR_LEN 10
#define LISP_HDR_LEN 8
#define IV_LEN 12
#define TAG_LEN 16
#define OVERHEAD (LISP_HDR_LEN + IV_LEN + TAG_LEN)
#define MAX_SUPER 65550
#define MAX_SEGMENTS 64
#define SEG_BUF 2048
#define RX_BATCH 64
#define REPLAY_BITS 4096
#define REPLAY_WORDS (REPLAY_BITS / 64)
#define MAX_ALLOWED 4096 /* EID prefixes of one certificate: a bound on the work per packet */
#define GSO_MAX_BYTES 65000
#define REJECT_AFTER_COUNTER (1ULL << 32) /* lisp.crypto.REJECT_AFTER_COUNTER */

enum {
    ST_INSIDE_PACKETS, ST_INSIDE_SUPER, ST_SEGMENTS, ST_SEALED, ST_SEND_ERRORS, ST_SLOW_INSIDE,
    ST_OUTSIDE_PACKETS, ST_OPENED, ST_DECRYPT_FAIL, ST_REPLAY, ST_SPOOFED, ST_WRONG_IID,
    ST_MALFORMED, ST_TUN_WRITE_ERRORS, ST_SLOW_OUTSIDE, ST_POLICY_DENIED, ST_PLAIN_SENT,
    ST_PLAIN_OPENED, ST_MTU_SLOW, ST_MTU_RESEGMENTED, ST_MSS_CLAMPED, ST_FOREIGN_DST,
    ST_KEY_EXHAUSTED, ST_GRO_SUPER, ST_GRO_MERGED, ST_COUNT
};
static const char *STAT_NAMES[ST_COUNT] = {
    "inside-packets", "inside-super-packets", "segments", "sealed", "send-errors",
    "slow-inside", "outside-packets", "opened", "decrypt-failure", "replay", "spoofed-source",
    "wrong-instance", "malformed", "tun-write-errors", "slow-outside", "policy-denied",
    "plain-sent", "plain-opened", "mtu-slow", "mtu-resegmented", "mss-clamped",
    "foreign-destination", "key-exhausted", "coalesced-super-packets", "coalesced-segments",
};

typedef struct {
    int used;
    int plain; /* RFC 9300 plaintext (KK = 0; security.encryption: false): no ctx, no IV/tag */
    EVP_CIPHER_CTX *ctx;
    const EVP_CIPHER *cipher;
    uint8_t salt[4];
    uint8_t header[LISP_HDR_LEN];
    uint64_t counter; /* one per key: every route using the key shares it (no nonce reuse) */
    uint64_t packets, bytes;
} Path;

typedef struct {
    int version;
    uint8_t net[16];
    int plen;
    int path;
    int fd;
    int mtu; /* the largest inner packet that fits the path (mesh/pmtu.py); 0: no limit */
    struct sockaddr_storage dest;
    socklen_t dest_len;
} Route;

typedef struct {
    int version;
    uint8_t net[16];
    int plen;
} Prefix;

typedef struct {
    int used;
    int slot;
    EVP_CIPHER_CTX *ctx;
    const EVP_CIPHER *cipher;
    uint64_t highest;
    uint64_t bitmap[REPLAY_WORDS];
    int n_allowed;
    Prefix *allowed; /* the sender's certified EIDs (PyMem; as many as its certificate has) */
    uint64_t packets, bytes;
} Slot;

typedef struct {
    int family;
    uint8_t addr[16];
    int key_id;
    int slot;
    uint64_t packets; /* opened from this source: proof the source RLOC is alive (mesh.xtr) */
} DecapKey;

/* Network policy (mesh/policy/ is the reference: same parsing, matching, flow table and
 * eviction, so the two give identical verdicts; tests/unit/test_policy.py holds them to it). */
#define POL_EGRESS 0
#define POL_INGRESS 1
#define TCP_TIMEOUT 300.0
#define TCP_CLOSING_TIMEOUT 10.0 /* once a FIN or RST was seen */
#define UDP_TIMEOUT 60.0
#define ICMP_TIMEOUT 30.0
#define OTHER_TIMEOUT 60.0
#define EVICT_FRACTION 8 /* a full table frees this fraction at once: rebuilds stay rare */
#define PEER_SHARE 16    /* a peer's flows past max_flows / PEER_SHARE are evicted first */
#define MAX_V6_HEADERS 8
#define MAX_FLOWS_LIMIT (1 << 22)

enum { PR_NO_POLICY, PR_ESTABLISHED, PR_RETURN, PR_ALLOWED, PR_DENIED, PR_DEFAULT_DENY,
       PR_MALFORMED };
static const char *POLICY_REASONS[] = {
    "no-policy", "established", "return", "allowed", "denied", "default-deny", "malformed",
};

typedef struct {
    int version;
    uint8_t src[16], dst[16]; /* IPv4 addresses in the first 4 bytes, the rest zero */
    uint8_t proto, has_ports, tcp_flags;
    uint16_t sport, dport;
} FlowTuple;

typedef struct {
    long long id;
    int allow;
    int protocol; /* -1: any */
    int n_src, n_dst, n_ports;
    Prefix *src, *dst;
    uint16_t *ports; /* n_ports (low, high) pairs; none when ports do not restrict the rule */
    uint64_t packets, bytes, flows;
} Rule;

typedef struct {
    uint8_t used, dir, version, proto, has_ports, closing, excess; /* excess: flow_make_room */
    uint16_t sport, dport;
    int32_t rule; /* index into the rules of `dir`, the direction the flow was opened in */
    uint32_t hash;
    uint8_t src[16], dst[16];
    double last_seen;
    uint64_t seq; /* creation order: breaks ties in last_seen when evicting */
} Flow;

typedef struct {
    double time;
    unsigned long long policy_version;
    long long rule_id; /* -1: no rule matched (default deny) */
    uint8_t dir, version, proto, allowed;
    uint16_t sport, dport;
    uint8_t src[16], dst[16];
} LogEntry;

typedef struct {
    int active; /* 0: no policy, everything passes untracked */
    unsigned long long version;
    Rule *rules[2];
    int n_rules[2];
    Flow *flows; /* open addressing, linear probing, at most half full */
    size_t mask;
    int n_flows, max_flows;
    uint64_t seq, seed;
    LogEntry *log; /* ring of the last log_size new-flow decisions */
    int log_size;
    uint64_t logged;
    uint64_t nomatch[2][2]; /* [direction][packets, bytes] denied by default */
    uint64_t malformed, revoked;
    size_t hint[2]; /* per direction, the slot of the flow the last packet belonged to */
} Policy;

typedef struct {
    PyObject_HEAD
    int tun_fd;
    int vnet;
    uint32_t iid;
    Path *paths;
    int n_paths;
    Route *routes;
    int n_routes;
    Slot *slots;
    int n_slots;
    DecapKey *keys;
    int n_keys;
    int accept_plain; /* security.encryption: false: KK = 0 packets are opened here */
    int mss_clamp;    /* xtr.mss_clamp: lower the MSS option of TCP SYNs to fit the path */
    /* Our EID prefixes: an opened packet for anything else is dropped (none set: no check). */
    Prefix *local;
    int n_local;
    /* one-entry route cache: the last destination and its route */
    int cache_version;
    uint8_t cache_dst[16];
    Route *cache_route;
    uint64_t stats[ST_COUNT];
    Policy policy;
    double now; /* CLOCK_MONOTONIC at the start of the current batch (policy) */
    uint8_t *super_buf;
    uint8_t *seg_bufs;
    uint8_t *out_bufs;
    uint8_t *rx_bufs;
    struct Gro *gro; /* receive coalescing (vnet TUN only) */
} Engine;

/* ------------------------------------------------------------------ checksums */

static uint32_t sum16(const uint8_t *data, size_t len, uint32_t sum) {
    while (len > 1) {
        sum += ((uint32_t)data[0] << 8) | data[1];
        data += 2;
        len -= 2;
    }
    if (len) sum += (uint32_t)data[0] << 8;
    return sum;
}

static uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xFF; }
static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = (v >> 16) & 0xFF; p[2] = (v >> 8) & 0xFF; p[3] = v & 0xFF;
}

/* The full L4 checksum of an IPv4/IPv6 packet whose L4 header starts at `l4`. */
static void l4_checksum(uint8_t *pkt, size_t len, size_t l4, int proto_off_field) {
    int version = pkt[0] >> 4;
    uint8_t proto;
    uint32_t sum = 0;
    size_t l4len = len - l4;
    if (version == 4) {
        proto = pkt[9];
        sum = sum16(pkt + 12, 8, 0);
    } else {
        proto = pkt[6];
        sum = sum16(pkt + 8, 32, 0);
    }
    sum += proto;
    sum += (uint32_t)l4len;
    uint8_t *field = pkt + l4 + proto_off_field;
    field[0] = field[1] = 0;
    sum = sum16(pkt + l4, l4len, sum);
    uint16_t c = fold(sum);
    if (proto == IPPROTO_UDP && c == 0) c = 0xFFFF;
    put16(field, c);
}

static void ipv4_header_checksum(uint8_t *pkt) {
    size_t ihl = (size_t)(pkt[0] & 0x0F) * 4;
    pkt[10] = pkt[11] = 0;
    put16(pkt + 10, fold(sum16(pkt, ihl, 0)));
}

/* ------------------------------------------------------------------ receive coalescing */

/* Consecutive in-order TCP segments of one flow, opened in one receive batch, are merged into one
 * super-packet and written to the TUN once with a virtio-net GSO header (as the kernel's GRO and
 * wireguard-go's TUN offload do): the kernel's TCP then takes one 64 KiB packet instead of 45.
 * The wire is unchanged: every datagram is still one LISP packet carrying one inner packet. Only
 * AEAD-verified packets are merged (the merged packet's checksum is left to the kernel as
 * CHECKSUM_PARTIAL, so a packet whose integrity no tag vouched for is written as it came). The
 * rules follow tcp_gro_receive: same addresses, ports, ack, options and IP fields; plain ACK or
 * PSH (PSH ends the merge); seq continuing the pending one; every segment but the last of full
 * size. Everything pending is written at the end of each receive batch, so no packet waits for
 * the next one. */

#define GRO_FLOWS 8
#define GRO_MAX_BYTES 65000

typedef struct {
    size_t len; /* 0: none pending */
    size_t iphl, hl;
    uint16_t mss;
    int segs;
    uint32_t next_seq;
    uint64_t age;
    uint8_t buf[VNET_HDR_LEN + GRO_MAX_BYTES]; /* virtio-net header, then the packet */
} GroFlow;

typedef void (*gro_emit)(void *ctx, uint8_t *vnet_and_packet, size_t len, int verified);

typedef struct Gro {
    GroFlow flows[GRO_FLOWS];
    uint64_t clock;
    uint64_t merged, supers;
} Gro;

/* A TCP segment that can be merged: returns its IP header length (and TCP header end), or 0. */
static size_t gro_candidate(const uint8_t *p, size_t len, size_t *hl) {
    if (len < 20) return 0;
    int version = p[0] >> 4;
    size_t iphl;
    if (version == 4) {
        /* no IP options, not a fragment, the length the packet has */
        if (p[0] != 0x45 || p[9] != IPPROTO_TCP || (get16(p + 6) & 0x3FFF) || get16(p + 2) != len)
            return 0;
        iphl = 20;
    } else if (version == 6) {
        if (len < 40 || p[6] != IPPROTO_TCP || (size_t)get16(p + 4) + 40 != len) return 0;
        iphl = 40;
    } else {
        return 0;
    }
    if (len < iphl + 20) return 0;
    size_t tcphl = (size_t)(p[iphl + 12] >> 4) * 4;
    if (tcphl < 20 || len <= iphl + tcphl) return 0; /* a bare ACK is written as it is */
    uint8_t flags = p[iphl + 13];
    if ((flags & ~0x08) != 0x10) return 0; /* ACK, or ACK + PSH; never SYN FIN RST URG ECE CWR */
    *hl = iphl + tcphl;
    return iphl;
}

/* Whether `p` belongs to flow `f`'s 4-tuple (addresses and ports). */
static int gro_same_flow(const GroFlow *f, const uint8_t *p, size_t iphl) {
    const uint8_t *q = f->buf + VNET_HDR_LEN;
    if (f->len == 0 || (q[0] >> 4) != (p[0] >> 4) || f->iphl != iphl) return 0;
    size_t aoff = iphl == 20 ? 12 : 8, alen = iphl == 20 ? 8 : 32;
    return memcmp(q + aoff, p + aoff, alen) == 0 && memcmp(q + iphl, p + iphl, 4) == 0;
}

/* Whether `p` (of f's flow) continues f: every header byte equal but lengths, IDs, checksums,
 * seq, window and PSH. */
static int gro_continues(const GroFlow *f, const uint8_t *p, size_t len, size_t hl) {
    const uint8_t *q = f->buf + VNET_HDR_LEN;
    size_t iphl = f->iphl;
    if (hl != f->hl || get32(p + iphl + 4) != f->next_seq) return 0;
    size_t payload = len - hl;
    if (payload > f->mss || f->len + payload > GRO_MAX_BYTES || f->segs >= MAX_SEGMENTS) return 0;
    if (iphl == 20) {
        if (q[1] != p[1] || q[6] != p[6] || q[7] != p[7] || q[8] != p[8]) return 0; /* TOS DF TTL */
    } else if (memcmp(q, p, 4) != 0 || q[7] != p[7]) {
        return 0; /* traffic class, flow label, hop limit */
    }
    if (memcmp(q + iphl + 8, p + iphl + 8, 5) != 0) return 0; /* ack, data offset */
    return memcmp(q + iphl + 20, p + iphl + 20, hl - iphl - 20) == 0; /* options */
}

static void gro_flush(Gro *g, GroFlow *f, gro_emit emit, void *ctx) {
    if (f->len == 0) return;
    uint8_t *vh = f->buf, *p = f->buf + VNET_HDR_LEN;
    memset(vh, 0, VNET_HDR_LEN);
    if (f->segs == 1) { /* nothing merged: the packet as it came, its checksum intact */
        vh[0] = VIRTIO_NET_HDR_F_DATA_VALID;
    } else {
        size_t iphl = f->iphl, l4len = f->len - iphl;
        uint32_t sum;
        if (iphl == 20) {
            put16(p + 2, (uint16_t)f->len);
            ipv4_header_checksum(p);
            sum = sum16(p + 12, 8, 0);
            vh[1] = VIRTIO_NET_HDR_GSO_TCPV4;
        } else {
            put16(p + 4, (uint16_t)l4len);
            sum = sum16(p + 8, 32, 0);
            vh[1] = VIRTIO_NET_HDR_GSO_TCPV6;
        }
        sum += IPPROTO_TCP + (uint32_t)l4len;
        /* CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel adds the rest */
        put16(p + iphl + 16, (uint16_t)~fold(sum));
        vh[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        struct virtio_net_hdr h;
        memcpy(&h, vh, VNET_HDR_LEN);
        h.hdr_len = (uint16_t)f->hl;
        h.gso_size = f->mss;
        h.csum_start = (uint16_t)iphl;
        h.csum_offset = 16;
        memcpy(vh, &h, VNET_HDR_LEN);
        g->supers++;
        g->merged += (uint64_t)f->segs;
    }
    emit(ctx, f->buf, f->len, 1);
    f->len = 0;
}

static void gro_flush_all(Gro *g, gro_emit emit, void *ctx) {
    for (int i = 0; i < GRO_FLOWS; i++) gro_flush(g, &g->flows[i], emit, ctx);
}

/* Take one verified inner packet at `plain + VNET_HDR_LEN` (room for a header before it): merge
 * it, hold it as the start of a merge, or write it (after its own flow's pending packet). */
static void gro_add(Gro *g, uint8_t *plain, size_t len, gro_emit emit, void *ctx) {
    uint8_t *p = plain + VNET_HDR_LEN;
    size_t hl = 0;
    size_t iphl = gro_candidate(p, len, &hl);
    GroFlow *f = NULL, *free_slot = NULL, *oldest = NULL;
    if (iphl || (len >= 20 && ((p[0] >> 4) == 4 ? p[9] : p[6]) == IPPROTO_TCP)) {
        size_t h = (p[0] >> 4) == 4 ? (size_t)(p[0] & 0x0F) * 4 : 40;
        for (int i = 0; i < GRO_FLOWS; i++) {
            GroFlow *c = &g->flows[i];
            if (c->len == 0) { if (!free_slot) free_slot = c; continue; }
            if (len >= h + 4 && gro_same_flow(c, p, h)) { f = c; break; }
            if (!oldest || c->age < oldest->age) oldest = c;
        }
    }
    if (f && iphl && gro_continues(f, p, len, hl)) {
        size_t payload = len - hl;
        uint8_t *q = f->buf + VNET_HDR_LEN;
        memcpy(q + f->len, p + hl, payload);
        f->len += payload;
        f->segs++;
        f->next_seq += (uint32_t)payload;
        memcpy(q + f->iphl + 14, p + iphl + 14, 2); /* the newest window */
        q[f->iphl + 13] |= p[iphl + 13] & 0x08;     /* PSH */
        if ((p[iphl + 13] & 0x08) || payload < f->mss) gro_flush(g, f, emit, ctx);
        return;
    }
    if (f) gro_flush(g, f, emit, ctx); /* this flow's pending data goes first */
    if (!iphl || (p[iphl + 13] & 0x08) || len > GRO_MAX_BYTES) {
        memset(plain, 0, VNET_HDR_LEN);
        plain[0] = VIRTIO_NET_HDR_F_DATA_VALID;
        emit(ctx, plain, len, 1);
        return;
    }
    if (!f) f = free_slot;
    if (!f) {
        f = oldest;
        gro_flush(g, f, emit, ctx);
    }
    memcpy(f->buf + VNET_HDR_LEN, p, len);
    f->len = len;
    f->iphl = iphl;
    f->hl = hl;
    f->mss = (uint16_t)(len - hl);
    f->segs = 1;
    f->next_seq = get32(p + iphl + 4) + (uint32_t)(len - hl);
    f->age = ++g->clock;
}

/* ------------------------------------------------------------------ crypto */

static int path_overhead(const Path *p) { return p->plain ? LISP_HDR_LEN : OVERHEAD; }

static int seal(Path *p, const uint8_t *inner, size_t len, uint8_t *out) {
    if (p->plain) {
        memcpy(out, p->header, LISP_HDR_LEN);
        memcpy(out + LISP_HDR_LEN, inner, len);
        p->counter++;
        return (int)(len + LISP_HDR_LEN);
    }
    if (p->counter >= REJECT_AFTER_COUNTER) return -2; /* the hard limit: rekeying failed */
    uint8_t *iv = out + LISP_HDR_LEN;
    int outl = 0, fin = 0;
    memcpy(out, p->header, LISP_HDR_LEN);
    memcpy(iv, p->salt, 4);
    uint64_t c = ++p->counter;
    for (int i = 0; i < 8; i++) iv[4 + i] = (uint8_t)(c >> (56 - 8 * i));
    if (!EVP_EncryptInit_ex(p->ctx, NULL, NULL, NULL, iv)) return -1;
    if (!EVP_EncryptUpdate(p->ctx, NULL, &outl, out, LISP_HDR_LEN)) return -1;
    if (!EVP_EncryptUpdate(p->ctx, out + LISP_HDR_LEN + IV_LEN, &outl, inner, (int)len)) return -1;
    if (!EVP_EncryptFinal_ex(p->ctx, out + LISP_HDR_LEN + IV_LEN + outl, &fin)) return -1;
    if (!EVP_CIPHER_CTX_ctrl(p->ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN,
                             out + LISP_HDR_LEN + IV_LEN + len)) return -1;
    return (int)(len + OVERHEAD);
}

/* Decrypt `pkt` (LISP header | IV | ct | tag) into `out`; returns the inner length or -1. */
static int open_packet(Slot *s, const uint8_t *pkt, size_t len, uint8_t *out, uint64_t *counter) {
    int outl = 0, fin = 0;
    if (len < OVERHEAD + 1) return -1;
    size_t ctlen = len - OVERHEAD;
    const uint8_t *iv = pkt + LISP_HDR_LEN;
    if (!EVP_DecryptInit_ex(s->ctx, NULL, NULL, NULL, iv)) return -1;
    if (!EVP_DecryptUpdate(s->ctx, NULL, &outl, pkt, LISP_HDR_LEN)) return -1;
    if (!EVP_DecryptUpdate(s->ctx, out, &outl, pkt + LISP_HDR_LEN + IV_LEN, (int)ctlen)) return -1;
    if (!EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN,
                             (void *)(pkt + LISP_HDR_LEN + IV_LEN + ctlen))) return -1;
    if (EVP_DecryptFinal_ex(s->ctx, out + outl, &fin) <= 0) return -1;
    uint64_t c = 0;
    for (int i = 0; i < 8; i++) c = (c << 8) | iv[4 + i];
    *counter = c;
    return (int)ctlen;
}

static const EVP_CIPHER *suite_cipher(int suite, Py_ssize_t keylen) {
    if (suite == 5 && keylen == 16) return EVP_aes_128_gcm();
    if (suite == 6 && keylen == 32) return EVP_chacha20_poly1305();
    return NULL;
}

static EVP_CIPHER_CTX *new_ctx(const EVP_CIPHER *cipher, const uint8_t *key, int encrypt) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return NULL;
    int ok = encrypt ? EVP_EncryptInit_ex(ctx, cipher, NULL, key, NULL)
                     : EVP_DecryptInit_ex(ctx, cipher, NULL, key, NULL);
    if (!ok || !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, IV_LEN, NULL)) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* RFC 6479-style window: accept a counter once, reject anything older than the window. */
static int replay_accept(Slot *s, uint64_t c) {
    if (c == 0) return 0;
    if (c > s->highest) {
        uint64_t shift = c - s->highest;
        if (shift >= REPLAY_BITS) {
            memset(s->bitmap, 0, sizeof(s->bitmap));
        } else {
            for (uint64_t k = s->highest + 1; k <= c && k - s->highest <= REPLAY_BITS; k++) {
                uint64_t bit = k % REPLAY_BITS;
                s->bitmap[bit / 64] &= ~(1ULL << (bit % 64));
            }
        }
        s->highest = c;
    } else if (s->highest - c >= REPLAY_BITS) {
        return 0;
    }
    uint64_t bit = c % REPLAY_BITS;
    uint64_t mask = 1ULL << (bit % 64);
    if (s->bitmap[bit / 64] & mask) return 0;
    s->bitmap[bit / 64] |= mask;
    return 1;
}

/* ------------------------------------------------------------------ tables */

static int prefix_match(int version, const uint8_t *addr, int pversion, const uint8_t *net,
                        int plen) {
    if (version != pversion) return 0;
    int full = plen / 8, rest = plen % 8;
    if (memcmp(addr, net, (size_t)full) != 0) return 0;
    if (rest) {
        uint8_t mask = (uint8_t)(0xFF << (8 - rest));
        if ((addr[full] & mask) != (net[full] & mask)) return 0;
    }
    return 1;
}

static Route *lookup_route(Engine *e, int version, const uint8_t *dst) {
    int alen = version == 4 ? 4 : 16;
    if (e->cache_version == version && memcmp(e->cache_dst, dst, (size_t)alen) == 0)
        return e->cache_route;
    Route *found = NULL;
    for (int i = 0; i < e->n_routes; i++) { /* sorted longest prefix first */
        Route *r = &e->routes[i];
        if (prefix_match(version, dst, r->version, r->net, r->plen)) {
            found = r;
            break;
        }
    }
    if (found && (found->path >= e->n_paths || !e->paths[found->path].used)) found = NULL;
    e->cache_version = version;
    memcpy(e->cache_dst, dst, (size_t)alen);
    e->cache_route = found;
    return found;
}

static Slot *lookup_slot(Engine *e, const struct sockaddr_storage *src, int key_id,
                         DecapKey **found) {
    uint8_t addr[16];
    int family = src->ss_family;
    if (family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)src)->sin_addr, 4);
    } else if (family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)src)->sin6_addr, 16);
    } else {
        return NULL;
    }
    int alen = family == AF_INET ? 4 : 16;
    for (int i = 0; i < e->n_keys; i++) {
        DecapKey *k = &e->keys[i];
        if (k->key_id == key_id && k->family == family &&
            memcmp(k->addr, addr, (size_t)alen) == 0) {
            if (k->slot < 0 || k->slot >= e->n_slots) return NULL;
            Slot *s = &e->slots[k->slot];
            if (found) *found = k;
            return s->used ? s : NULL;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ policy */

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of Python's time.monotonic() */
    return (double)((int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;
}

/* The 5-tuple of an IPv4/IPv6 packet (mesh.policy.parse_flow); -1 if it is not one or is
   malformed: an IPv6 header chain cut short or longer than MAX_V6_HEADERS, or a TCP/UDP packet
   (or first fragment) without its ports (seen as "protocol 60 without ports" it would slip past
   a `deny tcp/22` rule and still reach port 22). */
static int parse_flow(const uint8_t *p, size_t len, FlowTuple *f) {
    memset(f, 0, sizeof(*f));
    if (len < 1) return -1;
    int version = p[0] >> 4, frag = 0;
    size_t off;
    uint8_t proto;
    if (version == 4) {
        size_t ihl = (size_t)(p[0] & 0x0F) * 4;
        if (len < 20 || ihl < 20 || len < ihl) return -1;
        memcpy(f->src, p + 12, 4);
        memcpy(f->dst, p + 16, 4);
        proto = p[9];
        off = ihl;
        frag = (get16(p + 6) & 0x1FFF) != 0;
    } else if (version == 6) {
        if (len < 40) return -1;
        memcpy(f->src, p + 8, 16);
        memcpy(f->dst, p + 24, 16);
        proto = p[6];
        off = 40;
        int walked = 0;
        for (; walked < MAX_V6_HEADERS; walked++) {
            if (proto == 0 || proto == 43 || proto == 60) { /* hop-by-hop, routing, dest opts */
                if (len < off + 2) return -1; /* the chain is cut short */
                proto = p[off];
                off += ((size_t)p[off + 1] + 1) * 8;
            } else if (proto == 44) { /* fragment: only the first one has the L4 header */
                if (len < off + 8) return -1;
                int offset = get16(p + off + 2) & 0xFFF8;
                proto = p[off];
                off += 8;
                if (offset) { frag = 1; break; }
            } else {
                break;
            }
        }
        if (walked == MAX_V6_HEADERS && (proto == 0 || proto == 43 || proto == 60 || proto == 44))
            return -1; /* more extension headers than we walk */
    } else {
        return -1;
    }
    f->version = version;
    f->proto = proto;
    if (frag) return 0;
    if ((proto == 6 || proto == 17) && len < off + 4) return -1; /* no ports */
    if (proto == 6 || proto == 17) {
        f->sport = get16(p + off);
        f->dport = get16(p + off + 2);
        f->has_ports = 1;
        if (proto == 6 && len >= off + 14) f->tcp_flags = p[off + 13];
    } else if (((version == 4 && proto == 1) || (version == 6 && proto == 58)) &&
               len >= off + 8) {
        /* Echo: the identifier as (id, 0) in a request and (0, id) in a reply, so a reply is
           the reverse of its request and a request from the other side is not. */
        uint8_t type = p[off];
        uint16_t ident = get16(p + off + 4);
        if (type == (version == 4 ? 8 : 128)) f->sport = ident;
        else if (type == (version == 4 ? 0 : 129)) f->dport = ident;
    }
    return 0;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Seeded per engine, so a peer cannot aim its flows at one probe chain. */
static uint32_t flow_hash(const Policy *pol, int dir, int version, int proto, int sport,
                          int dport, const uint8_t *src, const uint8_t *dst) {
    uint64_t h = pol->seed ^ ((uint64_t)dir << 56 | (uint64_t)version << 48 |
                              (uint64_t)proto << 32 | (uint64_t)sport << 16 | (uint64_t)dport);
    h = mix64(h);
    for (int i = 0; i < 16; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        h = mix64(h ^ w);
        memcpy(&w, dst + i, 8);
        h = mix64(h ^ w);
    }
    return (uint32_t)h;
}

static double flow_timeout(const Flow *f) {
    if (f->proto == 6) return f->closing ? TCP_CLOSING_TIMEOUT : TCP_TIMEOUT;
    if (f->proto == 17) return UDP_TIMEOUT;
    if (f->proto == 1 || f->proto == 58) return ICMP_TIMEOUT;
    return OTHER_TIMEOUT;
}

static int flow_expired(const Flow *f, double now) { return now - f->last_seen > flow_timeout(f); }

/* Backward-shift deletion: linear probing without tombstones. */
static void flow_delete(Policy *pol, size_t i) {
    size_t j = i;
    for (;;) {
        j = (j + 1) & pol->mask;
        Flow *f = &pol->flows[j];
        if (!f->used) break;
        size_t home = f->hash & pol->mask;
        if (((j - home) & pol->mask) >= ((j - i) & pol->mask)) {
            pol->flows[i] = *f;
            i = j;
        }
    }
    pol->flows[i].used = 0;
    pol->n_flows--;
}

static int flow_is(const Flow *f, int dir, int version, int proto, int sport, int dport,
                   const uint8_t *src, const uint8_t *dst) {
    return f->dir == dir && f->proto == proto && f->version == version && f->sport == sport &&
           f->dport == dport && memcmp(f->src, src, 16) == 0 && memcmp(f->dst, dst, 16) == 0;
}

/* The live flow with this key, or NULL (an expired one is removed on the way). */
static Flow *flow_find(Policy *pol, int dir, int version, int proto, int sport, int dport,
                       const uint8_t *src, const uint8_t *dst, double now) {
    uint32_t hash = flow_hash(pol, dir, version, proto, sport, dport, src, dst);
    for (size_t i = hash & pol->mask;; i = (i + 1) & pol->mask) {
        Flow *f = &pol->flows[i];
        if (!f->used) return NULL;
        if (f->hash == hash && flow_is(f, dir, version, proto, sport, dport, src, dst)) {
            if (!flow_expired(f, now)) return f;
            flow_delete(pol, i);
            return NULL;
        }
    }
}

static void flow_place(Policy *pol, const Flow *f) {
    size_t i = f->hash & pol->mask;
    while (pol->flows[i].used) i = (i + 1) & pol->mask;
    pol->flows[i] = *f;
    pol->n_flows++;
}

static int flow_older(const void *a, const void *b) {
    const Flow *x = a, *y = b;
    if (x->last_seen != y->last_seen) return x->last_seen < y->last_seen ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Refill the table with the flows of `keep[0..n)` still marked used (a rebuild never breaks a
   probe chain). */
static void flow_refill(Policy *pol, Flow *keep, int n) {
    memset(pol->flows, 0, (pol->mask + 1) * sizeof(Flow));
    pol->n_flows = 0;
    for (int k = 0; k < n; k++)
        if (keep[k].used) flow_place(pol, &keep[k]);
}

/* Who a flow counts against (mesh.policy.flows.peer_of): the remote end's /24 or /64. */
static const uint8_t *flow_peer(const Flow *f, size_t *len) {
    *len = f->version == 4 ? 3 : 8;
    return f->dir == POL_EGRESS ? f->dst : f->src;
}

static int same_peer(const Flow *x, const Flow *y) {
    size_t lx, ly;
    const uint8_t *px = flow_peer(x, &lx), *py = flow_peer(y, &ly);
    return lx == ly && memcmp(px, py, lx) == 0;
}

static int flow_peer_then_older(const void *a, const void *b) {
    const Flow *x = a, *y = b;
    size_t lx, ly;
    const uint8_t *px = flow_peer(x, &lx), *py = flow_peer(y, &ly);
    if (lx != ly) return lx < ly ? -1 : 1;
    int c = memcmp(px, py, lx);
    return c ? c : flow_older(a, b);
}

/* A full table (mesh.policy.flows.FlowTable._make_room): drop the expired flows; if that freed
   less than an eighth, evict the least recently seen flows of peers past their share
   (max_flows / PEER_SHARE), then the least recently seen of anyone, until an eighth is free.
   One rebuild per max_flows / 8 new flows at most, and one peer cannot push out the flows of
   peers within their share. Runs without the GIL (ingress), hence malloc rather than PyMem. */
static void flow_make_room(Policy *pol, double now) {
    Flow *keep = malloc(sizeof(Flow) * ((size_t)pol->n_flows + 1));
    if (!keep) { /* no memory: forget every flow; their next packets meet the rules again */
        flow_refill(pol, NULL, 0);
        return;
    }
    int n = 0;
    for (size_t i = 0; i <= pol->mask; i++)
        if (pol->flows[i].used && !flow_expired(&pol->flows[i], now)) keep[n++] = pol->flows[i];
    int target = pol->max_flows / EVICT_FRACTION;
    if (target < 1) target = 1;
    int need = n - (pol->max_flows - target);
    if (need > 0) {
        int quota = pol->max_flows / PEER_SHARE;
        if (quota < 1) quota = 1;
        /* Mark each peer's oldest flows beyond its share... */
        qsort(keep, (size_t)n, sizeof(Flow), flow_peer_then_older);
        for (int start = 0; start < n;) {
            int end = start + 1;
            while (end < n && same_peer(&keep[start], &keep[end])) end++;
            for (int k = start; k < end; k++) keep[k].excess = k - start < end - start - quota;
            start = end;
        }
        /* ...then evict in age order: those marked first, anyone after. */
        qsort(keep, (size_t)n, sizeof(Flow), flow_older);
        for (int k = 0; k < n && need > 0; k++)
            if (keep[k].excess) { keep[k].used = 0; need--; }
        for (int k = 0; k < n && need > 0; k++)
            if (keep[k].used) { keep[k].used = 0; need--; }
        for (int k = 0; k < n; k++) keep[k].excess = 0;
    }
    flow_refill(pol, keep, n);
    free(keep);
}

static void flow_add(Policy *pol, int dir, const FlowTuple *t, int rule, int closing, double now) {
    if (pol->n_flows >= pol->max_flows) flow_make_room(pol, now);
    Flow f;
    memset(&f, 0, sizeof(f));
    f.used = 1;
    f.dir = (uint8_t)dir;
    f.version = (uint8_t)t->version;
    f.proto = t->proto;
    f.has_ports = t->has_ports;
    f.closing = (uint8_t)closing;
    f.sport = t->sport;
    f.dport = t->dport;
    f.rule = rule;
    memcpy(f.src, t->src, 16);
    memcpy(f.dst, t->dst, 16);
    f.hash = flow_hash(pol, dir, t->version, t->proto, t->sport, t->dport, t->src, t->dst);
    f.last_seen = now;
    f.seq = ++pol->seq;
    flow_place(pol, &f);
}

static int rule_matches(const Rule *r, const FlowTuple *f) {
    if (r->protocol >= 0 && r->protocol != f->proto) return 0;
    if (r->n_src) {
        int ok = 0;
        for (int i = 0; i < r->n_src && !ok; i++)
            ok = prefix_match(f->version, f->src, r->src[i].version, r->src[i].net, r->src[i].plen);
        if (!ok) return 0;
    }
    if (r->n_dst) {
        int ok = 0;
        for (int i = 0; i < r->n_dst && !ok; i++)
            ok = prefix_match(f->version, f->dst, r->dst[i].version, r->dst[i].net, r->dst[i].plen);
        if (!ok) return 0;
    }
    if (r->n_ports) {
        if (!f->has_ports) return 0;
        for (int i = 0; i < r->n_ports; i++)
            if (r->ports[2 * i] <= f->dport && f->dport <= r->ports[2 * i + 1]) return 1;
        return 0;
    }
    return 1;
}

static int first_match(const Policy *pol, int dir, const FlowTuple *f) {
    for (int k = 0; k < pol->n_rules[dir]; k++)
        if (rule_matches(&pol->rules[dir][k], f)) return k;
    return -1;
}

static void policy_log(Policy *pol, double now, int dir, const FlowTuple *f, int allowed,
                       long long rule_id) {
    if (pol->log_size <= 0) return;
    LogEntry *l = &pol->log[pol->logged % (uint64_t)pol->log_size];
    pol->logged++;
    l->time = now;
    l->policy_version = pol->version;
    l->rule_id = rule_id;
    l->dir = (uint8_t)dir;
    l->version = (uint8_t)f->version;
    l->proto = f->proto;
    l->allowed = (uint8_t)allowed;
    l->sport = f->sport;
    l->dport = f->dport;
    memcpy(l->src, f->src, 16);
    memcpy(l->dst, f->dst, 16);
}

/* One packet (or one TSO super-packet: one flow, `npkts` segments) against the policy.
   Returns 1 to let it pass; `reason` and `rule_id` (-1: none) say why. */
static int policy_check(Policy *pol, const uint8_t *pkt, size_t len, int dir, double now,
                        uint64_t npkts, uint64_t nbytes, int *reason, long long *rule_id) {
    *rule_id = -1;
    if (!pol->active) { *reason = PR_NO_POLICY; return 1; }
    FlowTuple f;
    if (parse_flow(pkt, len, &f) < 0) {
        pol->malformed++;
        *reason = PR_MALFORMED;
        return 0;
    }
    int closing = f.proto == 6 && (f.tcp_flags & 0x05); /* FIN or RST */
    /* A stream's packets skip the hashing: the flow of the last packet in this direction is
       checked first, forward then reversed. The two cannot both be live (a flow is only created
       when neither lookup finds one), so this gives the verdict of the full lookups; a hint
       that moved, went or expired just falls through to them. */
    Flow *fl = &pol->flows[pol->hint[dir]];
    *reason = PR_ESTABLISHED;
    if (!fl->used || flow_expired(fl, now)) {
        fl = NULL;
    } else if (!flow_is(fl, dir, f.version, f.proto, f.sport, f.dport, f.src, f.dst)) {
        *reason = PR_RETURN;
        if (!flow_is(fl, 1 - dir, f.version, f.proto, f.dport, f.sport, f.dst, f.src)) fl = NULL;
    }
    if (!fl) {
        *reason = PR_ESTABLISHED;
        fl = flow_find(pol, dir, f.version, f.proto, f.sport, f.dport, f.src, f.dst, now);
    }
    if (!fl) {
        fl = flow_find(pol, 1 - dir, f.version, f.proto, f.dport, f.sport, f.dst, f.src, now);
        *reason = PR_RETURN;
    }
    if (fl) {
        pol->hint[dir] = (size_t)(fl - pol->flows);
        fl->last_seen = now;
        if (closing) fl->closing = 1;
        Rule *r = &pol->rules[fl->dir][fl->rule];
        r->packets += npkts;
        r->bytes += nbytes;
        *rule_id = r->id;
        return 1;
    }
    int k = first_match(pol, dir, &f);
    if (k < 0) {
        pol->nomatch[dir][0] += npkts;
        pol->nomatch[dir][1] += nbytes;
        policy_log(pol, now, dir, &f, 0, -1);
        *reason = PR_DEFAULT_DENY;
        return 0;
    }
    Rule *r = &pol->rules[dir][k];
    r->packets += npkts;
    r->bytes += nbytes;
    r->flows++;
    *rule_id = r->id;
    policy_log(pol, now, dir, &f, r->allow, r->id);
    if (!r->allow) { *reason = PR_DENIED; return 0; }
    flow_add(pol, dir, &f, k, closing, now);
    *reason = PR_ALLOWED;
    return 1;
}

/* The data path's question: may this packet pass? A denied packet is counted here. */
static int policy_allows(Engine *e, const uint8_t *pkt, size_t len, int dir, uint64_t npkts,
                         uint64_t nbytes) {
    int reason;
    long long rule_id;
    if (policy_check(&e->policy, pkt, len, dir, e->now, npkts, nbytes, &reason, &rule_id))
        return 1;
    e->stats[ST_POLICY_DENIED] += npkts;
    return 0;
}

/* ------------------------------------------------------------------ inside -> outside */

static int send_batch(Engine *e, Path *p, Route *r, uint8_t *buf, int count, int seg_len,
                      int last_len) {
    size_t total = (size_t)seg_len * (size_t)(count - 1) + (size_t)last_len;
    struct iovec iov = {buf, total};
    char control[CMSG_SPACE(sizeof(uint16_t))];
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_name = &r->dest;
    msg.msg_namelen = r->dest_len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (count > 1) {
        /* UDP GSO: one call, the kernel cuts `buf` into datagrams of seg_len bytes. */
        memset(control, 0, sizeof(control));
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t gso = (uint16_t)seg_len;
        memcpy(CMSG_DATA(cm), &gso, sizeof(gso));
    }
    ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = sendmsg(r->fd, &msg, 0);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        e->stats[ST_SEND_ERRORS] += (uint64_t)count;
        return -1;
    }
    p->packets += (uint64_t)count;
    p->bytes += total;
    return 0;
}

/* Seal and send the `count` inner packets at `segs` (each SEG_BUF apart, lengths in `lens`). */
static void seal_and_send(Engine *e, Route *r, uint8_t *segs, const int *lens, int count) {
    Path *p = &e->paths[r->path];
    int start = 0;
    while (start < count) {
        /* A GSO batch needs equal-size datagrams; only the last may be shorter. */
        int seg_len = lens[start] + path_overhead(p);
        /* The kernel takes at most 64 segments and 64 KiB of UDP payload per GSO send. */
        int cap = GSO_MAX_BYTES / seg_len;
        if (cap > MAX_SEGMENTS) cap = MAX_SEGMENTS;
        if (cap < 1) cap = 1;
        int end = start + 1;
        while (end < count && lens[end] == lens[start] && end - start < cap) end++;
        if (end < count && lens[end] < lens[start] && end - start < cap) end++;
        uint8_t *out = e->out_bufs;
        int last_len = 0;
        for (int i = start; i < end; i++) {
            int n = seal(p, segs + (size_t)i * SEG_BUF, (size_t)lens[i], out);
            if (n < 0) {
                e->stats[n == -2 ? ST_KEY_EXHAUSTED : ST_SEND_ERRORS]++;
                return;
            }
            out += n;
            last_len = n;
        }
        e->stats[p->plain ? ST_PLAIN_SENT : ST_SEALED] += (uint64_t)(end - start);
        send_batch(e, p, r, e->out_bufs, end - start, seg_len, last_len);
        start = end;
    }
}

/* Cut a TSO super-packet into MSS-sized TCP segments with correct headers and checksums. */
static int segment_tcp(const uint8_t *pkt, size_t len, uint16_t mss, int max_len, int *cut,
                       uint8_t *segs, int *lens) {
    int version = pkt[0] >> 4;
    size_t iphl;
    if (version == 4) {
        iphl = (size_t)(pkt[0] & 0x0F) * 4;
        if (iphl < 20 || pkt[9] != IPPROTO_TCP) return -1;
    } else if (version == 6) {
        iphl = 40;
        if (pkt[6] != IPPROTO_TCP) return -1;
    } else {
        return -1;
    }
    if (len < iphl + 20) return -1;
    size_t tcphl = (size_t)(pkt[iphl + 12] >> 4) * 4;
    size_t hl = iphl + tcphl;
    if (max_len > 0 && hl + mss > (size_t)max_len && (size_t)max_len > hl + 64) {
        /* The path carries less than the sender's MSS: cut to the path (counted). */
        mss = (uint16_t)((size_t)max_len - hl);
        if (cut) *cut = 1;
    }
    if (tcphl < 20 || len < hl || mss == 0 || hl + mss > SEG_BUF) return -1;
    size_t payload = len - hl;
    int count = (int)((payload + mss - 1) / mss);
    if (count == 0) count = 1;
    if (count > MAX_SEGMENTS) return -1;
    uint32_t seq = get32(pkt + iphl + 4);
    uint16_t ipid = version == 4 ? get16(pkt + 4) : 0;
    uint8_t flags = pkt[iphl + 13];
    for (int i = 0; i < count; i++) {
        size_t off = (size_t)i * mss;
        size_t chunk = payload - off < mss ? payload - off : mss;
        uint8_t *s = segs + (size_t)i * SEG_BUF;
        memcpy(s, pkt, hl);
        memcpy(s + hl, pkt + hl + off, chunk);
        size_t slen = hl + chunk;
        if (version == 4) {
            put16(s + 2, (uint16_t)slen);
            put16(s + 4, (uint16_t)(ipid + i));
            ipv4_header_checksum(s);
        } else {
            put16(s + 4, (uint16_t)(slen - 40));
        }
        put32(s + iphl + 4, seq + (uint32_t)off);
        uint8_t f = flags;
        if (i != count - 1) f &= (uint8_t)~0x09; /* FIN, PSH only on the last segment */
        if (i != 0) f &= (uint8_t)~0x80;         /* CWR only on the first */
        s[iphl + 13] = f;
        l4_checksum(s, slen, iphl, 16);
        lens[i] = (int)slen;
    }
    return count;
}

/* Complete a checksum the sender left partial (virtio NEEDS_CSUM). */
static int finish_csum(uint8_t *pkt, size_t len, uint16_t start, uint16_t offset) {
    if ((size_t)start + offset + 2 > len) return -1;
    uint8_t *field = pkt + start + offset;
    uint32_t sum = sum16(pkt + start, len - start, 0);
    uint16_t c = fold(sum);
    (void)field;
    put16(field, c);
    return 0;
}

/* xtr.mss_clamp: lower the MSS option of a TCP SYN to `mss` (checksum updated, RFC 1624). */
static int clamp_mss(uint8_t *pkt, size_t len, int mss) {
    int version = pkt[0] >> 4;
    size_t l4;
    if (version == 4) {
        l4 = (size_t)(pkt[0] & 0x0F) * 4;
        if (l4 < 20 || pkt[9] != IPPROTO_TCP || (get16(pkt + 6) & 0x1FFF)) return 0;
    } else if (version == 6 && len >= 40) {
        l4 = 40;
        if (pkt[6] != IPPROTO_TCP) return 0;
    } else {
        return 0;
    }
    if (len < l4 + 20 || !(pkt[l4 + 13] & 0x02) || mss <= 0) return 0;
    size_t end = l4 + (size_t)(pkt[l4 + 12] >> 4) * 4;
    if (end > len) return 0;
    size_t i = l4 + 20;
    while (i < end) {
        uint8_t kind = pkt[i];
        if (kind == 0) return 0;
        if (kind == 1) { i++; continue; }
        if (i + 1 >= end || pkt[i + 1] < 2) return 0;
        if (kind == 2 && pkt[i + 1] == 4 && i + 4 <= end) {
            uint16_t old = get16(pkt + i + 2);
            if (old <= mss) return 0;
            put16(pkt + i + 2, (uint16_t)mss);
            /* At an odd offset of the header the value counts byte-swapped in the sum. */
            uint16_t before = old, after = (uint16_t)mss;
            if ((i + 2 - l4) & 1) {
                before = (uint16_t)((old << 8) | (old >> 8));
                after = (uint16_t)((after << 8) | (after >> 8));
            }
            uint32_t sum = (uint32_t)(~get16(pkt + l4 + 16) & 0xFFFF) + (~before & 0xFFFF) + after;
            while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
            put16(pkt + l4 + 16, (uint16_t)~sum);
            return 1;
        }
        i += pkt[i + 1];
    }
    return 0;
}

/* Handle one inner packet (not a super-packet). Returns 1 if it needs the slow path. */
static int handle_inside(Engine *e, uint8_t *pkt, size_t len) {
    int version = len ? pkt[0] >> 4 : 0;
    const uint8_t *dst;
    if (version == 4 && len >= 20) dst = pkt + 16;
    else if (version == 6 && len >= 40) dst = pkt + 24;
    else return 1;
    Route *route = lookup_route(e, version, dst);
    if (!route) return 1;
    if (len + OVERHEAD > SEG_BUF) return 1;
    /* Larger than the path carries: Python fragments it or answers the sender with ICMP. */
    if (route->mtu && len > (size_t)route->mtu) { e->stats[ST_MTU_SLOW]++; return 1; }
    if (e->policy.active && !policy_allows(e, pkt, len, POL_EGRESS, 1, len)) return 0;
    memcpy(e->seg_bufs, pkt, len);
    /* On the copy: `pkt` may be a Python bytes object (inject). */
    if (e->mss_clamp && route->mtu &&
        clamp_mss(e->seg_bufs, len, route->mtu - (version == 4 ? 20 : 40) - 20))
        e->stats[ST_MSS_CLAMPED]++;
    int l = (int)len;
    seal_and_send(e, route, e->seg_bufs, &l, 1);
    return 0;
}

static PyObject *engine_pump_inside(Engine *e, PyObject *args) {
    int budget;
    if (!PyArg_ParseTuple(args, "i", &budget)) return NULL;
    PyObject *slow = PyList_New(0);
    if (!slow) return NULL;
    int lens[MAX_SEGMENTS];
    if (e->policy.active) e->now = mono_now();
    for (int n = 0; n < budget; n++) {
        ssize_t r;
        Py_BEGIN_ALLOW_THREADS
        r = read(e->tun_fd, e->super_buf, MAX_SUPER);
        Py_END_ALLOW_THREADS
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            break;
        }
        uint8_t *pkt = e->super_buf;
        size_t len = (size_t)r;
        struct virtio_net_hdr vh;
        memset(&vh, 0, sizeof(vh));
        if (e->vnet) {
            if (len < VNET_HDR_LEN) continue;
            memcpy(&vh, pkt, VNET_HDR_LEN);
            pkt += VNET_HDR_LEN;
            len -= VNET_HDR_LEN;
        }
        e->stats[ST_INSIDE_PACKETS]++;
        uint8_t gso = vh.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
        if (gso == VIRTIO_NET_HDR_GSO_TCPV4 || gso == VIRTIO_NET_HDR_GSO_TCPV6) {
            int version = pkt[0] >> 4;
            const uint8_t *dst = version == 4 ? pkt + 16 : pkt + 24;
            Route *route = (len >= 40) ? lookup_route(e, version, dst) : NULL;
            int cut = 0;
            int count = route ? segment_tcp(pkt, len, vh.gso_size, route->mtu, &cut, e->seg_bufs,
                                            lens) : -1;
            if (count < 0) {
                if (!route) goto slow;
                if (route->mtu &&
                    segment_tcp(pkt, len, vh.gso_size, 0, NULL, e->seg_bufs, lens) >= 0) {
                    /* Cut to the path it would need more than MAX_SEGMENTS: Python answers. */
                    e->stats[ST_MTU_SLOW]++;
                    goto slow;
                }
                e->stats[ST_MALFORMED]++;
                continue;
            }
            if (cut) e->stats[ST_MTU_RESEGMENTED]++;
            e->stats[ST_INSIDE_SUPER]++;
            e->stats[ST_SEGMENTS] += (uint64_t)count;
            if (e->policy.active) { /* one super-packet is one flow: one check */
                uint64_t bytes = 0;
                for (int i = 0; i < count; i++) bytes += (uint64_t)lens[i];
                if (!policy_allows(e, pkt, len, POL_EGRESS, (uint64_t)count, bytes)) continue;
            }
            seal_and_send(e, route, e->seg_bufs, lens, count);
            continue;
        }
        if (vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
            if (finish_csum(pkt, len, vh.csum_start, vh.csum_offset) < 0) {
                e->stats[ST_MALFORMED]++;
                continue;
            }
        }
        if (!handle_inside(e, pkt, len)) continue;
    slow:
        e->stats[ST_SLOW_INSIDE]++;
        {
            /* Python gets plain packets: a super-packet is segmented first. */
            if (gso == VIRTIO_NET_HDR_GSO_TCPV4 || gso == VIRTIO_NET_HDR_GSO_TCPV6) {
                int count = segment_tcp(pkt, len, vh.gso_size, 0, NULL, e->seg_bufs, lens);
                for (int i = 0; i < count; i++) {
                    PyObject *b = PyBytes_FromStringAndSize(
                        (const char *)e->seg_bufs + (size_t)i * SEG_BUF, lens[i]);
                    if (!b || PyList_Append(slow, b) < 0) { Py_XDECREF(b); Py_DECREF(slow); return NULL; }
                    Py_DECREF(b);
                }
            } else {
                PyObject *b = PyBytes_FromStringAndSize((const char *)pkt, (Py_ssize_t)len);
                if (!b || PyList_Append(slow, b) < 0) { Py_XDECREF(b); Py_DECREF(slow); return NULL; }
                Py_DECREF(b);
            }
        }
    }
    return slow;
}

static PyObject *engine_inject(Engine *e, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    if (e->policy.active) e->now = mono_now();
    int slow = handle_inside(e, (uint8_t *)buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    return PyBool_FromLong(!slow);
}

/* ------------------------------------------------------------------ outside -> inside */

/* Is the inner packet's source (`dst` 0) or destination (`dst` 1) inside one of `prefixes`? */
static int inner_address_in(const uint8_t *inner, size_t len, int dst, const Prefix *prefixes,
                            int n) {
    int version = inner[0] >> 4;
    const uint8_t *addr;
    if (version == 4 && len >= 20) addr = inner + (dst ? 16 : 12);
    else if (version == 6 && len >= 40) addr = inner + (dst ? 24 : 8);
    else return 0;
    for (int i = 0; i < n; i++) {
        const Prefix *p = &prefixes[i];
        if (prefix_match(version, addr, p->version, p->net, p->plen)) return 1;
    }
    return 0;
}

/* Is the inner destination one of our EIDs? (An ETR is no open relay: a peer may send only to
 * us, not through us to whatever the TUN side routes.) */
static int destination_ours(Engine *e, const uint8_t *inner, size_t len) {
    return !e->n_local || inner_address_in(inner, len, 1, e->local, e->n_local);
}

/* Is the inner source one of the EIDs the sender's certificate names? */
static int source_allowed(Slot *s, const uint8_t *inner, size_t len) {
    return inner_address_in(inner, len, 0, s->allowed, s->n_allowed);
}

static PyObject *addr_tuple(const struct sockaddr_storage *ss) {
    char text[INET6_ADDRSTRLEN];
    int port;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
        port = ntohs(a->sin_port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
        port = ntohs(a->sin6_port);
    }
    return Py_BuildValue("(si)", text, port);
}

/* Write an inner packet at plain + VNET_HDR_LEN to the TUN. `verified`: an AEAD tag vouched for
 * it, so the kernel need not check its checksum. */
static void write_tun(Engine *e, uint8_t *plain, size_t n, int verified) {
    const uint8_t *out = plain + VNET_HDR_LEN;
    size_t outlen = n;
    if (e->vnet) {
        memset(plain, 0, VNET_HDR_LEN);
        if (verified) plain[0] = VIRTIO_NET_HDR_F_DATA_VALID;
        out = plain;
        outlen += VNET_HDR_LEN;
    }
    ssize_t w = write(e->tun_fd, out, outlen);
    if (w < 0) e->stats[ST_TUN_WRITE_ERRORS]++;
}

static void tun_emit(void *ctx, uint8_t *buf, size_t len, int verified) {
    (void)verified; /* the header at buf is already filled in */
    Engine *e = ctx;
    ssize_t w = write(e->tun_fd, buf, len + VNET_HDR_LEN);
    if (w < 0) e->stats[ST_TUN_WRITE_ERRORS]++;
}

/* A KK = 0 packet with encryption off (RFC 9300 plaintext): instance check, policy, TUN. */
static int deliver_plain(Engine *e, const uint8_t *pkt, size_t len, uint8_t *plain) {
    size_t n = len - LISP_HDR_LEN;
    if (n == 0 || n > SEG_BUF) { e->stats[ST_MALFORMED]++; return 0; }
    uint32_t header_iid = (pkt[0] & 0x08) ? ((uint32_t)get32(pkt + 4) >> 8) : 0;
    if (header_iid != e->iid) { e->stats[ST_WRONG_IID]++; return 0; }
    uint8_t *inner = plain + VNET_HDR_LEN;
    memcpy(inner, pkt + LISP_HDR_LEN, n);
    if (!destination_ours(e, inner, n)) { e->stats[ST_FOREIGN_DST]++; return 0; }
    e->stats[ST_PLAIN_OPENED]++;
    if (e->policy.active && !policy_allows(e, inner, n, POL_INGRESS, 1, (uint64_t)n)) return 0;
    write_tun(e, plain, n, 0);
    return 0;
}

/* Open one LISP data packet. Returns 0 delivered/dropped here, 1 for the slow path. */
static int handle_outside(Engine *e, const uint8_t *pkt, size_t len,
                          const struct sockaddr_storage *src, uint8_t *plain) {
    e->stats[ST_OUTSIDE_PACKETS]++;
    if (len < LISP_HDR_LEN) { e->stats[ST_MALFORMED]++; return 0; }
    int key_id = pkt[0] & 0x03;
    if (key_id == 0) {
        /* Plaintext: refused (and counted) by Python unless encryption is off. */
        if (!e->accept_plain) return 1;
        return deliver_plain(e, pkt, len, plain);
    }
    DecapKey *k = NULL;
    Slot *s = lookup_slot(e, src, key_id, &k);
    if (!s) return 1;
    uint64_t counter = 0;
    uint8_t *inner = plain + VNET_HDR_LEN;
    int n = open_packet(s, pkt, len, inner, &counter);
    if (n <= 0) { e->stats[ST_DECRYPT_FAIL]++; return 0; }
    if (!replay_accept(s, counter)) { e->stats[ST_REPLAY]++; return 0; }
    /* No I bit means instance-id 0: a node in another instance must always say which. */
    uint32_t header_iid = (pkt[0] & 0x08) ? ((uint32_t)get32(pkt + 4) >> 8) : 0;
    if (header_iid != e->iid) {
        e->stats[ST_WRONG_IID]++;
        return 0;
    }
    if (!source_allowed(s, inner, (size_t)n)) { e->stats[ST_SPOOFED]++; return 0; }
    if (!destination_ours(e, inner, (size_t)n)) { e->stats[ST_FOREIGN_DST]++; return 0; }
    s->packets++;
    s->bytes += (uint64_t)n;
    if (k) k->packets++;
    e->stats[ST_OPENED]++;
    if (e->policy.active && !policy_allows(e, inner, (size_t)n, POL_INGRESS, 1, (uint64_t)n))
        return 0;
    /* The AEAD tag vouches for the packet: tell the kernel its checksum is valid (and, on a
     * virtio-net TUN, merge it with the flow's next segments). */
    if (e->vnet) gro_add(e->gro, plain, (size_t)n, tun_emit, e);
    else write_tun(e, plain, (size_t)n, 1);
    return 0;
}

static PyObject *engine_pump_outside(Engine *e, PyObject *args) {
    int fd, budget;
    if (!PyArg_ParseTuple(args, "ii", &fd, &budget)) return NULL;
    PyObject *slow = PyList_New(0);
    if (!slow) return NULL;
    struct mmsghdr msgs[RX_BATCH];
    struct iovec iovs[RX_BATCH];
    struct sockaddr_storage addrs[RX_BATCH];
    uint8_t plain[SEG_BUF + VNET_HDR_LEN];
    int done = 0;
    if (e->policy.active) e->now = mono_now();
    while (done < budget) {
        int want = budget - done < RX_BATCH ? budget - done : RX_BATCH;
        memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)want);
        for (int i = 0; i < want; i++) {
            iovs[i].iov_base = e->rx_bufs + (size_t)i * SEG_BUF;
            iovs[i].iov_len = SEG_BUF;
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
        }
        int got;
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        Py_END_ALLOW_THREADS
        if (got <= 0) break;
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < got; i++) {
            size_t len = msgs[i].msg_len;
            uint8_t *pkt = e->rx_bufs + (size_t)i * SEG_BUF;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) { e->stats[ST_MALFORMED]++; msgs[i].msg_len = 0; continue; }
            if (handle_outside(e, pkt, len, &addrs[i], plain) == 0) msgs[i].msg_len = 0;
            else msgs[i].msg_len = (unsigned)len | 0x80000000u; /* mark: slow path */
        }
        gro_flush_all(e->gro, tun_emit, e); /* nothing waits for the next batch */
        Py_END_ALLOW_THREADS
        e->stats[ST_GRO_SUPER] = e->gro->supers;
        e->stats[ST_GRO_MERGED] = e->gro->merged;
        for (int i = 0; i < got; i++) {
            if (!(msgs[i].msg_len & 0x80000000u)) continue;
            size_t len = msgs[i].msg_len & 0x7FFFFFFFu;
            e->stats[ST_SLOW_OUTSIDE]++;
            PyObject *b = PyBytes_FromStringAndSize((const char *)e->rx_bufs + (size_t)i * SEG_BUF, (Py_ssize_t)len);
            PyObject *a = addr_tuple(&addrs[i]);
            PyObject *t = (b && a) ? PyTuple_Pack(2, b, a) : NULL;
            Py_XDECREF(b);
            Py_XDECREF(a);
            if (!t || PyList_Append(slow, t) < 0) { Py_XDECREF(t); Py_DECREF(slow); return NULL; }
            Py_DECREF(t);
        }
        done += got;
        if (got < want) break;
    }
    return slow;
}

/* ------------------------------------------------------------------ table management */

static int parse_sockaddr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

static void free_path(Path *p) {
    if (p->ctx) EVP_CIPHER_CTX_free(p->ctx);
    memset(p, 0, sizeof(*p));
}

static void free_slot(Slot *s) {
    if (s->ctx) EVP_CIPHER_CTX_free(s->ctx);
    PyMem_Free(s->allowed);
    memset(s, 0, sizeof(*s));
}

static int grow(void **array, int *count, int index, size_t size) {
    if (index < *count) return 0;
    void *n = PyMem_Realloc(*array, size * (size_t)(index + 1));
    if (!n) return -1;
    memset((uint8_t *)n + size * (size_t)*count, 0, size * (size_t)(index + 1 - *count));
    *array = n;
    *count = index + 1;
    return 0;
}

/* set_path(id, suite, key, salt, header, counter): a key and its counter */
static PyObject *engine_set_path(Engine *e, PyObject *args) {
    int id, suite;
    unsigned long long counter;
    Py_buffer key, salt, header;
    if (!PyArg_ParseTuple(args, "iiy*y*y*K", &id, &suite, &key, &salt, &header, &counter))
        return NULL;
    PyObject *result = NULL;
    int plain = suite == 0 && key.len == 0; /* suite 0, no key: a plaintext path */
    const EVP_CIPHER *cipher = suite_cipher(suite, key.len);
    if (id < 0 || id > 1 << 20) { PyErr_SetString(PyExc_ValueError, "bad path id"); goto out; }
    if (!cipher && !plain) { PyErr_SetString(PyExc_ValueError, "unsupported cipher suite or key length"); goto out; }
    if (salt.len != 4 || header.len != LISP_HDR_LEN) { PyErr_SetString(PyExc_ValueError, "salt must be 4 bytes, header 8"); goto out; }
    if (grow((void **)&e->paths, &e->n_paths, id, sizeof(Path)) < 0) { PyErr_NoMemory(); goto out; }
    Path *p = &e->paths[id];
    free_path(p);
    p->plain = plain;
    if (!plain) p->ctx = new_ctx(cipher, key.buf, 1);
    if (!plain && !p->ctx) { PyErr_SetString(PyExc_RuntimeError, "cannot set up the cipher"); goto out; }
    p->cipher = cipher;
    memcpy(p->salt, salt.buf, 4);
    memcpy(p->header, header.buf, LISP_HDR_LEN);
    p->counter = counter;
    p->used = 1;
    e->cache_version = 0;
    e->cache_route = NULL;
    result = Py_None;
    Py_INCREF(result);
out:
    PyBuffer_Release(&key);
    PyBuffer_Release(&salt);
    PyBuffer_Release(&header);
    return result;
}

static PyObject *engine_remove_path(Engine *e, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    if (id >= 0 && id < e->n_paths) free_path(&e->paths[id]);
    e->cache_version = 0;
    e->cache_route = NULL;
    Py_RETURN_NONE;
}

/* path_state(id) -> (counter, packets, bytes) */
static PyObject *engine_path_state(Engine *e, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    if (id < 0 || id >= e->n_paths || !e->paths[id].used) Py_RETURN_NONE;
    Path *p = &e->paths[id];
    return Py_BuildValue("(KKK)", (unsigned long long)p->counter,
                         (unsigned long long)p->packets, (unsigned long long)p->bytes);
}

static int parse_prefix(PyObject *item, int *version, uint8_t *net, int *plen) {
    Py_buffer b;
    if (!PyArg_ParseTuple(item, "iy*i", version, &b, plen)) return -1;
    int alen = *version == 4 ? 4 : 16;
    int ok = (*version == 4 || *version == 6) && b.len == alen && *plen >= 0 && *plen <= alen * 8;
    if (ok) memcpy(net, b.buf, (size_t)alen);
    PyBuffer_Release(&b);
    if (!ok) { PyErr_SetString(PyExc_ValueError, "bad prefix"); return -1; }
    return 0;
}

/* set_routes([(version, net, plen, path_id, fd, dest_ip, dest_port), ...]), longest first */
static PyObject *engine_set_routes(Engine *e, PyObject *args) {
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    Route *routes = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Route));
    if (!routes) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_buffer net;
        const char *ip;
        int port;
        Route *r = &routes[i];
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "iy*iiisi|i", &r->version, &net, &r->plen, &r->path, &r->fd,
                              &ip, &port, &r->mtu)) {
            PyMem_Free(routes);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "route: (version, net, plen, path, fd, ip, port)");
            return NULL;
        }
        int alen = r->version == 4 ? 4 : 16;
        int ok = (r->version == 4 || r->version == 6) && net.len == alen && r->plen >= 0 &&
                 r->plen <= alen * 8 && parse_sockaddr(ip, port, &r->dest, &r->dest_len) == 0;
        if (ok) memcpy(r->net, net.buf, (size_t)alen);
        PyBuffer_Release(&net);
        if (!ok) {
            PyMem_Free(routes);
            PyErr_SetString(PyExc_ValueError, "bad route prefix or destination");
            return NULL;
        }
    }
    PyMem_Free(e->routes);
    e->routes = routes;
    e->n_routes = (int)n;
    e->cache_version = 0;
    e->cache_route = NULL;
    Py_RETURN_NONE;
}

/* set_slot(id, suite, key, allowed=[(version, net, plen)...]) */
static int parse_prefix_list(PyObject *list, Prefix **out, int *n);

static PyObject *engine_set_slot(Engine *e, PyObject *args) {
    int id, suite;
    Py_buffer key;
    PyObject *allowed;
    if (!PyArg_ParseTuple(args, "iiy*O!", &id, &suite, &key, &PyList_Type, &allowed)) return NULL;
    PyObject *result = NULL;
    const EVP_CIPHER *cipher = suite_cipher(suite, key.len);
    Py_ssize_t na = PyList_GET_SIZE(allowed);
    if (id < 0 || id > 1 << 20) { PyErr_SetString(PyExc_ValueError, "bad slot id"); goto out; }
    if (!cipher) { PyErr_SetString(PyExc_ValueError, "unsupported cipher suite or key length"); goto out; }
    if (na > MAX_ALLOWED) { PyErr_SetString(PyExc_ValueError, "too many allowed prefixes"); goto out; }
    if (grow((void **)&e->slots, &e->n_slots, id, sizeof(Slot)) < 0) { PyErr_NoMemory(); goto out; }
    Slot tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (parse_prefix_list(allowed, &tmp.allowed, &tmp.n_allowed) < 0) goto out;
    tmp.ctx = new_ctx(cipher, key.buf, 0);
    if (!tmp.ctx) {
        PyMem_Free(tmp.allowed);
        PyErr_SetString(PyExc_RuntimeError, "cannot set up the cipher");
        goto out;
    }
    tmp.cipher = cipher;
    tmp.used = 1;
    tmp.slot = id;
    free_slot(&e->slots[id]);
    e->slots[id] = tmp;
    result = Py_None;
    Py_INCREF(result);
out:
    PyBuffer_Release(&key);
    return result;
}

static PyObject *engine_remove_slot(Engine *e, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    if (id >= 0 && id < e->n_slots) free_slot(&e->slots[id]);
    int j = 0;
    for (int i = 0; i < e->n_keys; i++)
        if (e->keys[i].slot != id) e->keys[j++] = e->keys[i];
    e->n_keys = j;
    Py_RETURN_NONE;
}

/* slot_state(id) -> (packets, bytes, highest counter) */
static PyObject *engine_slot_state(Engine *e, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    if (id < 0 || id >= e->n_slots || !e->slots[id].used) Py_RETURN_NONE;
    Slot *s = &e->slots[id];
    return Py_BuildValue("(KKK)", (unsigned long long)s->packets, (unsigned long long)s->bytes,
                         (unsigned long long)s->highest);
}

/* set_decap_key(source_ip, key_id, slot_id): packets from source_ip with key_id open in slot */
static PyObject *engine_set_decap_key(Engine *e, PyObject *args) {
    const char *ip;
    int key_id, slot;
    if (!PyArg_ParseTuple(args, "sii", &ip, &key_id, &slot)) return NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_sockaddr(ip, 0, &ss, &len) < 0 || key_id < 1 || key_id > 3) {
        PyErr_SetString(PyExc_ValueError, "bad source address or key-id");
        return NULL;
    }
    DecapKey k;
    memset(&k, 0, sizeof(k));
    k.family = ss.ss_family;
    if (k.family == AF_INET) memcpy(k.addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    else memcpy(k.addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    k.key_id = key_id;
    k.slot = slot;
    int alen = k.family == AF_INET ? 4 : 16;
    for (int i = 0; i < e->n_keys; i++) {
        DecapKey *o = &e->keys[i];
        if (o->key_id == key_id && o->family == k.family && memcmp(o->addr, k.addr, (size_t)alen) == 0) {
            o->slot = slot;
            Py_RETURN_NONE;
        }
    }
    DecapKey *n = PyMem_Realloc(e->keys, sizeof(DecapKey) * (size_t)(e->n_keys + 1));
    if (!n) return PyErr_NoMemory();
    e->keys = n;
    e->keys[e->n_keys++] = k;
    Py_RETURN_NONE;
}

/* key_packets() -> [(source_ip, key_id, packets)]: packets opened per (source, key-id), for
 * passive liveness (traffic received from an RLOC proves it is alive; no probe needed) */
static PyObject *engine_key_packets(Engine *e, PyObject *Py_UNUSED(ignored)) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int i = 0; i < e->n_keys; i++) {
        DecapKey *k = &e->keys[i];
        if (!k->packets) continue;
        char text[INET6_ADDRSTRLEN];
        inet_ntop(k->family, k->addr, text, sizeof(text));
        PyObject *item = Py_BuildValue("(siK)", text, k->key_id, (unsigned long long)k->packets);
        if (!item || PyList_Append(list, item) < 0) { Py_XDECREF(item); Py_DECREF(list); return NULL; }
        Py_DECREF(item);
    }
    return list;
}

/* remove_decap_key(source_ip, key_id) */
static PyObject *engine_remove_decap_key(Engine *e, PyObject *args) {
    const char *ip;
    int key_id;
    if (!PyArg_ParseTuple(args, "si", &ip, &key_id)) return NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_sockaddr(ip, 0, &ss, &len) < 0) {
        PyErr_SetString(PyExc_ValueError, "bad source address");
        return NULL;
    }
    uint8_t addr[16];
    int alen = ss.ss_family == AF_INET ? 4 : 16;
    if (ss.ss_family == AF_INET) memcpy(addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    else memcpy(addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    int j = 0;
    for (int i = 0; i < e->n_keys; i++) {
        DecapKey *k = &e->keys[i];
        int same = k->key_id == key_id && k->family == ss.ss_family &&
                   memcmp(k->addr, addr, (size_t)alen) == 0;
        if (!same) e->keys[j++] = *k;
    }
    e->n_keys = j;
    Py_RETURN_NONE;
}

/* seal_one(path_id, inner) -> sealed bytes (tests: compare with the Python reference) */
static PyObject *engine_seal_one(Engine *e, PyObject *args) {
    int id;
    Py_buffer inner;
    if (!PyArg_ParseTuple(args, "iy*", &id, &inner)) return NULL;
    PyObject *result = NULL;
    if (id < 0 || id >= e->n_paths || !e->paths[id].used || inner.len + OVERHEAD > SEG_BUF) {
        PyErr_SetString(PyExc_ValueError, "no such path or packet too large");
    } else {
        int n = seal(&e->paths[id], inner.buf, (size_t)inner.len, e->out_bufs);
        if (n < 0) PyErr_SetString(PyExc_RuntimeError, "seal failed");
        else result = PyBytes_FromStringAndSize((const char *)e->out_bufs, n);
    }
    PyBuffer_Release(&inner);
    return result;
}

/* deliver_outside(source_ip, packet) -> True if the engine handled it (opened and written to
 * the TUN, or dropped and counted), False if it holds no key for it. For packets that came
 * through an RTR: the outer source is the RTR, `source_ip` the sender named in the relay frame,
 * which the decap keys are indexed by. */
static PyObject *engine_deliver_outside(Engine *e, PyObject *args) {
    const char *ip;
    Py_buffer pkt;
    if (!PyArg_ParseTuple(args, "sy*", &ip, &pkt)) return NULL;
    PyObject *result = NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    uint8_t plain[SEG_BUF + VNET_HDR_LEN];
    if (parse_sockaddr(ip, 0, &ss, &len) < 0 || pkt.len > SEG_BUF) {
        PyErr_SetString(PyExc_ValueError, "bad source or packet");
        goto out;
    }
    if (e->policy.active) e->now = mono_now();
    result = handle_outside(e, pkt.buf, (size_t)pkt.len, &ss, plain) == 0 ? Py_True : Py_False;
    Py_INCREF(result);
out:
    PyBuffer_Release(&pkt);
    return result;
}

/* open_one(source_ip, packet) -> inner bytes or None (tests) */
static PyObject *engine_open_one(Engine *e, PyObject *args) {
    const char *ip;
    Py_buffer pkt;
    if (!PyArg_ParseTuple(args, "sy*", &ip, &pkt)) return NULL;
    PyObject *result = NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    uint8_t plain[SEG_BUF + VNET_HDR_LEN];
    uint64_t counter = 0;
    if (parse_sockaddr(ip, 0, &ss, &len) < 0 || pkt.len < LISP_HDR_LEN || pkt.len > SEG_BUF) {
        PyErr_SetString(PyExc_ValueError, "bad source or packet");
        goto out;
    }
    Slot *s = lookup_slot(e, &ss, ((uint8_t *)pkt.buf)[0] & 0x03, NULL);
    int n = s ? open_packet(s, pkt.buf, (size_t)pkt.len, plain, &counter) : -1;
    if (n < 0 || !replay_accept(s, counter)) {
        result = Py_None;
        Py_INCREF(result);
    } else {
        result = PyBytes_FromStringAndSize((const char *)plain, n);
    }
out:
    PyBuffer_Release(&pkt);
    return result;
}

/* set_plaintext(accept): with encryption off, open KK = 0 packets here (else Python refuses them) */
/* set_mss_clamp(on): lower the MSS of TCP SYNs to what their path carries */
static PyObject *engine_set_mss_clamp(Engine *e, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    e->mss_clamp = on;
    Py_RETURN_NONE;
}

static PyObject *engine_set_plaintext(Engine *e, PyObject *args) {
    int accept;
    if (!PyArg_ParseTuple(args, "p", &accept)) return NULL;
    e->accept_plain = accept;
    Py_RETURN_NONE;
}

/* set_local_eids([(version, net, plen), ...]): our EID prefixes (empty: no destination check) */
/* set_instance_id(iid): the instance-id opened packets must carry (a live change) */
static PyObject *engine_set_instance_id(Engine *e, PyObject *args) {
    unsigned int iid;
    if (!PyArg_ParseTuple(args, "I", &iid)) return NULL;
    if (iid > 0xFFFFFF) { PyErr_SetString(PyExc_ValueError, "instance-id is 24 bits"); return NULL; }
    e->iid = iid;
    Py_RETURN_NONE;
}

static PyObject *engine_set_local_eids(Engine *e, PyObject *args) {
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list)) return NULL;
    Prefix *local = NULL;
    int n = 0;
    if (parse_prefix_list(list, &local, &n) < 0) return NULL;
    PyMem_Free(e->local);
    e->local = local;
    e->n_local = n;
    Py_RETURN_NONE;
}

static PyObject *engine_stats(Engine *e, PyObject *Py_UNUSED(ignored)) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < ST_COUNT; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(e->stats[i]);
        if (!v || PyDict_SetItemString(d, STAT_NAMES[i], v) < 0) { Py_XDECREF(v); Py_DECREF(d); return NULL; }
        Py_DECREF(v);
    }
    return d;
}

/* ------------------------------------------------------------------ policy management */

static void free_rules(Rule *rules, int n) {
    for (int i = 0; rules && i < n; i++) {
        PyMem_Free(rules[i].src);
        PyMem_Free(rules[i].dst);
        PyMem_Free(rules[i].ports);
    }
    PyMem_Free(rules);
}

static void policy_free(Policy *pol) {
    for (int d = 0; d < 2; d++) free_rules(pol->rules[d], pol->n_rules[d]);
    PyMem_Free(pol->flows);
    PyMem_Free(pol->log);
    memset(pol, 0, sizeof(*pol));
}

static int parse_prefix_list(PyObject *list, Prefix **out, int *n) {
    Py_ssize_t count = PyList_GET_SIZE(list);
    if (!count) return 0;
    Prefix *p = PyMem_Calloc((size_t)count, sizeof(Prefix));
    if (!p) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(item) || parse_prefix(item, &p[i].version, p[i].net, &p[i].plen) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "prefix: (version, net, plen)");
            PyMem_Free(p);
            return -1;
        }
    }
    *out = p;
    *n = (int)count;
    return 0;
}

/* [(id, allow, protocol or -1, src [(version, net, plen)...], dst [...], ports [(lo, hi)...])] */
static int parse_rules(PyObject *list, Rule **out, int *n) {
    Py_ssize_t count = PyList_GET_SIZE(list);
    Rule *rules = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Rule));
    if (!rules) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < count; i++) {
        Rule *r = &rules[i];
        PyObject *item = PyList_GET_ITEM(list, i), *src, *dst, *ports;
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "LpiO!O!O!", &r->id, &r->allow, &r->protocol, &PyList_Type,
                              &src, &PyList_Type, &dst, &PyList_Type, &ports)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "rule: (id, allow, protocol, src, dst, ports)");
            goto fail;
        }
        if (r->protocol < -1 || r->protocol > 255) {
            PyErr_SetString(PyExc_ValueError, "rule protocol must be -1 (any) or 0..255");
            goto fail;
        }
        if (parse_prefix_list(src, &r->src, &r->n_src) < 0 ||
            parse_prefix_list(dst, &r->dst, &r->n_dst) < 0)
            goto fail;
        Py_ssize_t np = PyList_GET_SIZE(ports);
        if (np && r->protocol != 1 && r->protocol != 58) { /* ports never restrict ICMP rules */
            r->ports = PyMem_Calloc((size_t)np * 2, sizeof(uint16_t));
            if (!r->ports) { PyErr_NoMemory(); goto fail; }
            for (Py_ssize_t j = 0; j < np; j++) {
                int lo, hi;
                PyObject *range = PyList_GET_ITEM(ports, j);
                if (!PyTuple_Check(range) || !PyArg_ParseTuple(range, "ii", &lo, &hi) || lo < 0 ||
                    hi > 65535 || lo > hi) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "port range: (low, high) in 0..65535");
                    goto fail;
                }
                r->ports[2 * j] = (uint16_t)lo;
                r->ports[2 * j + 1] = (uint16_t)hi;
            }
            r->n_ports = (int)np;
        }
    }
    *out = rules;
    *n = (int)count;
    return 0;
fail:
    free_rules(rules, (int)count);
    return -1;
}

/* A new policy over a live table: flows its rules still allow stay (with their new rule),
   the others and the expired ones go. */
static void policy_recheck(Policy *pol, double now) {
    Flow *keep = PyMem_Malloc(sizeof(Flow) * ((size_t)pol->n_flows + 1));
    if (!keep) { /* no memory: forget every flow; their next packets meet the new rules */
        flow_refill(pol, NULL, 0);
        return;
    }
    int n = 0;
    for (size_t i = 0; i <= pol->mask; i++) {
        Flow *f = &pol->flows[i];
        if (!f->used || flow_expired(f, now)) continue;
        FlowTuple t;
        memset(&t, 0, sizeof(t));
        t.version = f->version;
        t.proto = f->proto;
        t.has_ports = f->has_ports;
        t.sport = f->sport;
        t.dport = f->dport;
        memcpy(t.src, f->src, 16);
        memcpy(t.dst, f->dst, 16);
        int k = first_match(pol, f->dir, &t);
        if (k < 0 || !pol->rules[f->dir][k].allow) {
            pol->revoked++;
            continue;
        }
        f->rule = k;
        keep[n++] = *f;
    }
    flow_refill(pol, keep, n);
    PyMem_Free(keep);
}

/* set_policy(version, egress, ingress, now, max_flows=65536, log_size=256) */
static PyObject *engine_set_policy(Engine *e, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"version", "egress", "ingress", "now", "max_flows", "log_size", NULL};
    unsigned long long version;
    PyObject *egress, *ingress;
    double now;
    int max_flows = 65536, log_size = 256;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KO!O!d|ii", kwlist, &version, &PyList_Type,
                                     &egress, &PyList_Type, &ingress, &now, &max_flows, &log_size))
        return NULL;
    if (max_flows < 1 || max_flows > MAX_FLOWS_LIMIT || log_size < 0 || log_size > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "max_flows must be 1..4194304, log_size 0..1048576");
        return NULL;
    }
    Rule *rules[2] = {NULL, NULL};
    int n[2] = {0, 0};
    if (parse_rules(egress, &rules[0], &n[0]) < 0) return NULL;
    if (parse_rules(ingress, &rules[1], &n[1]) < 0) {
        free_rules(rules[0], n[0]);
        return NULL;
    }
    Policy *pol = &e->policy;
    int fresh = !pol->active || pol->max_flows != max_flows || pol->log_size != log_size;
    if (fresh) {
        size_t slots = 1;
        while (slots < 2 * (size_t)max_flows) slots <<= 1; /* at most half full: short probes */
        Flow *flows = PyMem_Calloc(slots, sizeof(Flow));
        LogEntry *log = PyMem_Calloc((size_t)(log_size ? log_size : 1), sizeof(LogEntry));
        if (!flows || !log) {
            PyMem_Free(flows);
            PyMem_Free(log);
            free_rules(rules[0], n[0]);
            free_rules(rules[1], n[1]);
            return PyErr_NoMemory();
        }
        uint64_t seq = pol->seq;
        policy_free(pol);
        pol->flows = flows;
        pol->mask = slots - 1;
        pol->max_flows = max_flows;
        pol->log = log;
        pol->log_size = log_size;
        pol->seq = seq;
        if (getrandom(&pol->seed, sizeof(pol->seed), GRND_NONBLOCK) != sizeof(pol->seed))
            pol->seed = mix64((uint64_t)(uintptr_t)pol ^ (uint64_t)(now * 1e9));
    } else {
        for (int d = 0; d < 2; d++) free_rules(pol->rules[d], pol->n_rules[d]);
    }
    for (int d = 0; d < 2; d++) {
        pol->rules[d] = rules[d];
        pol->n_rules[d] = n[d];
    }
    pol->version = version;
    pol->active = 1;
    memset(pol->nomatch, 0, sizeof(pol->nomatch)); /* counters belong to one policy */
    pol->malformed = 0;
    pol->revoked = 0;
    if (!fresh) policy_recheck(pol, now);
    Py_RETURN_NONE;
}

/* clear_policy(): no policy, everything passes (the state of a node the controller has not
   given a policy yet) */
static PyObject *engine_clear_policy(Engine *e, PyObject *Py_UNUSED(ignored)) {
    policy_free(&e->policy);
    Py_RETURN_NONE;
}

/* policy_check(packet, "egress"|"ingress", now) -> (allowed, rule_id or None, reason) (tests) */
static PyObject *engine_policy_check(Engine *e, PyObject *args) {
    Py_buffer pkt;
    const char *direction;
    double now;
    if (!PyArg_ParseTuple(args, "y*sd", &pkt, &direction, &now)) return NULL;
    int dir = strcmp(direction, "egress") == 0 ? POL_EGRESS
              : strcmp(direction, "ingress") == 0 ? POL_INGRESS : -1;
    if (dir < 0) {
        PyBuffer_Release(&pkt);
        PyErr_SetString(PyExc_ValueError, "direction must be 'egress' or 'ingress'");
        return NULL;
    }
    int reason;
    long long rule_id;
    int ok = policy_check(&e->policy, pkt.buf, (size_t)pkt.len, dir, now, 1, (uint64_t)pkt.len,
                          &reason, &rule_id);
    PyBuffer_Release(&pkt);
    PyObject *rid = rule_id < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(rule_id);
    if (!rid) return NULL;
    return Py_BuildValue("(ONs)", ok ? Py_True : Py_False, rid, POLICY_REASONS[reason]);
}

/* policy_stats(now) -> None (no policy) or {version, flows, max_flows, rules: ([(packets,
   bytes, flows)...] egress, [...] ingress), default_deny: ((p, b), (p, b)), malformed, revoked} */
static PyObject *engine_policy_stats(Engine *e, PyObject *args) {
    double now;
    if (!PyArg_ParseTuple(args, "d", &now)) return NULL;
    Policy *pol = &e->policy;
    if (!pol->active) Py_RETURN_NONE;
    int live = 0;
    for (size_t i = 0; i <= pol->mask; i++)
        if (pol->flows[i].used && !flow_expired(&pol->flows[i], now)) live++;
    PyObject *lists[2] = {NULL, NULL};
    for (int d = 0; d < 2; d++) {
        lists[d] = PyList_New(pol->n_rules[d]);
        if (!lists[d]) goto fail;
        for (int k = 0; k < pol->n_rules[d]; k++) {
            Rule *r = &pol->rules[d][k];
            PyObject *t = Py_BuildValue("(KKK)", (unsigned long long)r->packets,
                                        (unsigned long long)r->bytes, (unsigned long long)r->flows);
            if (!t) goto fail;
            PyList_SET_ITEM(lists[d], k, t);
        }
    }
    return Py_BuildValue(
        "{s:K,s:i,s:i,s:(NN),s:((KK)(KK)),s:K,s:K}", "version", pol->version, "flows", live,
        "max_flows", pol->max_flows, "rules", lists[0], lists[1], "default_deny",
        (unsigned long long)pol->nomatch[0][0], (unsigned long long)pol->nomatch[0][1],
        (unsigned long long)pol->nomatch[1][0], (unsigned long long)pol->nomatch[1][1],
        "malformed", (unsigned long long)pol->malformed, "revoked",
        (unsigned long long)pol->revoked);
fail:
    Py_XDECREF(lists[0]);
    Py_XDECREF(lists[1]);
    return NULL;
}

/* read_flow_log() -> [(time, policy_version, direction, src, dst, protocol, sport, dport,
   allowed, rule_id or None)], oldest first */
static PyObject *engine_read_flow_log(Engine *e, PyObject *Py_UNUSED(ignored)) {
    Policy *pol = &e->policy;
    PyObject *list = PyList_New(0);
    if (!list || !pol->active || pol->log_size <= 0) return list;
    uint64_t size = (uint64_t)pol->log_size;
    uint64_t count = pol->logged < size ? pol->logged : size;
    for (uint64_t k = pol->logged - count; k < pol->logged; k++) {
        LogEntry *l = &pol->log[k % size];
        Py_ssize_t alen = l->version == 4 ? 4 : 16;
        PyObject *rid = l->rule_id < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(l->rule_id);
        PyObject *item = rid ? Py_BuildValue("(dKsy#y#iiiON)", l->time, l->policy_version,
                                             l->dir ? "ingress" : "egress", l->src, alen, l->dst,
                                             alen, (int)l->proto, (int)l->sport, (int)l->dport,
                                             l->allowed ? Py_True : Py_False, rid)
                             : NULL;
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

/* ------------------------------------------------------------------ type */

static int engine_init(Engine *e, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tun_fd", "vnet_hdr", "instance_id", NULL};
    int fd, vnet;
    unsigned int iid;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ipI", kwlist, &fd, &vnet, &iid)) return -1;
    e->tun_fd = fd;
    e->vnet = vnet;
    e->iid = iid;
    e->super_buf = PyMem_Malloc(MAX_SUPER + 64);
    e->seg_bufs = PyMem_Malloc((size_t)MAX_SEGMENTS * SEG_BUF);
    e->out_bufs = PyMem_Malloc((size_t)MAX_SEGMENTS * SEG_BUF);
    e->rx_bufs = PyMem_Malloc((size_t)RX_BATCH * SEG_BUF);
    e->gro = PyMem_Calloc(1, sizeof(Gro));
    if (!e->super_buf || !e->seg_bufs || !e->out_bufs || !e->rx_bufs || !e->gro) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void engine_dealloc(Engine *e) {
    for (int i = 0; i < e->n_paths; i++) free_path(&e->paths[i]);
    for (int i = 0; i < e->n_slots; i++) free_slot(&e->slots[i]);
    policy_free(&e->policy);
    PyMem_Free(e->paths);
    PyMem_Free(e->routes);
    PyMem_Free(e->slots);
    PyMem_Free(e->keys);
    PyMem_Free(e->local);
    PyMem_Free(e->super_buf);
    PyMem_Free(e->seg_bufs);
    PyMem_Free(e->out_bufs);
    PyMem_Free(e->rx_bufs);
    PyMem_Free(e->gro);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef engine_methods[] = {
    {"pump_inside", (PyCFunction)engine_pump_inside, METH_VARARGS, "read TUN, seal, send; returns slow-path packets"},
    {"pump_outside", (PyCFunction)engine_pump_outside, METH_VARARGS, "recv, open, write TUN; returns slow-path (packet, source)"},
    {"deliver_outside", (PyCFunction)engine_deliver_outside, METH_VARARGS, "open one relayed packet as if from source; False: no key"},
    {"inject", (PyCFunction)engine_inject, METH_VARARGS, "send one inner packet if it has a route"},
    {"set_path", (PyCFunction)engine_set_path, METH_VARARGS, "install a path"},
    {"remove_path", (PyCFunction)engine_remove_path, METH_VARARGS, "remove a path"},
    {"path_state", (PyCFunction)engine_path_state, METH_VARARGS, "(counter, packets, bytes)"},
    {"set_routes", (PyCFunction)engine_set_routes, METH_VARARGS, "replace the route table"},
    {"set_slot", (PyCFunction)engine_set_slot, METH_VARARGS, "install a decap slot"},
    {"remove_slot", (PyCFunction)engine_remove_slot, METH_VARARGS, "remove a decap slot"},
    {"slot_state", (PyCFunction)engine_slot_state, METH_VARARGS, "(packets, bytes, highest)"},
    {"set_decap_key", (PyCFunction)engine_set_decap_key, METH_VARARGS, "map (source, key-id) to a slot"},
    {"key_packets", (PyCFunction)engine_key_packets, METH_NOARGS, "[(source, key-id, packets)]"},
    {"remove_decap_key", (PyCFunction)engine_remove_decap_key, METH_VARARGS, "unmap (source, key-id)"},
    {"seal_one", (PyCFunction)engine_seal_one, METH_VARARGS, "seal one packet (tests)"},
    {"open_one", (PyCFunction)engine_open_one, METH_VARARGS, "open one packet (tests)"},
    {"stats", (PyCFunction)engine_stats, METH_NOARGS, "counters"},
    {"set_mss_clamp", (PyCFunction)engine_set_mss_clamp, METH_VARARGS, "clamp the MSS of TCP SYNs to the path"},
    {"set_local_eids", (PyCFunction)engine_set_local_eids, METH_VARARGS, "our EID prefixes"},
    {"set_instance_id", (PyCFunction)engine_set_instance_id, METH_VARARGS, "our instance-id"},
    {"set_plaintext", (PyCFunction)engine_set_plaintext, METH_VARARGS, "accept KK = 0 packets (encryption off)"},
    {"set_policy", (PyCFunction)(void (*)(void))engine_set_policy, METH_VARARGS | METH_KEYWORDS, "install or replace the network policy"},
    {"clear_policy", (PyCFunction)engine_clear_policy, METH_NOARGS, "no policy: allow everything"},
    {"policy_check", (PyCFunction)engine_policy_check, METH_VARARGS, "check one packet (tests)"},
    {"policy_stats", (PyCFunction)engine_policy_stats, METH_VARARGS, "policy counters"},
    {"read_flow_log", (PyCFunction)engine_read_flow_log, METH_NOARGS, "recent new-flow decisions"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mesh._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_methods = engine_methods,
    .tp_doc = "the lispmesh C data path",
};

/* segment(packet, mss) -> list of TCP segments (tests: checked against an independent parser) */
static PyObject *module_segment(PyObject *Py_UNUSED(m), PyObject *args) {
    Py_buffer pkt;
    int mss, max_len = 0;
    if (!PyArg_ParseTuple(args, "y*i|i", &pkt, &mss, &max_len)) return NULL;
    PyObject *list = NULL;
    uint8_t *segs = PyMem_Malloc((size_t)MAX_SEGMENTS * SEG_BUF);
    int lens[MAX_SEGMENTS];
    if (!segs) { PyErr_NoMemory(); goto out; }
    int count = mss > 0 && mss < 65536
                    ? segment_tcp(pkt.buf, (size_t)pkt.len, (uint16_t)mss, max_len, NULL, segs, lens)
                    : -1;
    if (count < 0) { PyErr_SetString(PyExc_ValueError, "not a segmentable TCP packet"); goto out; }
    list = PyList_New(count);
    if (!list) goto out;
    for (int i = 0; i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)segs + (size_t)i * SEG_BUF, lens[i]);
        if (!b) { Py_CLEAR(list); goto out; }
        PyList_SET_ITEM(list, i, b);
    }
out:
    PyMem_Free(segs);
    PyBuffer_Release(&pkt);
    return list;
}

/* clamp_mss(packet, mss) -> the packet with its SYN's MSS lowered, or None (tests) */
typedef struct {
    PyObject *list;
    int failed;
} CoalesceOut;

static void list_emit(void *ctx, uint8_t *buf, size_t len, int verified) {
    (void)verified;
    CoalesceOut *out = ctx;
    if (out->failed) return;
    PyObject *t = Py_BuildValue("(y#y#)", (const char *)buf, (Py_ssize_t)VNET_HDR_LEN,
                                (const char *)buf + VNET_HDR_LEN, (Py_ssize_t)len);
    if (!t || PyList_Append(out->list, t) < 0) out->failed = 1;
    Py_XDECREF(t);
}

/* coalesce(packets) -> [(virtio-net header, packet)]: what the ETR writes to its TUN for these
 * verified inner packets opened in one batch (the receive coalescing, for tests). */
static PyObject *module_coalesce(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *packets;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &packets)) return NULL;
    Gro *g = PyMem_Calloc(1, sizeof(Gro));
    uint8_t *plain = PyMem_Malloc(VNET_HDR_LEN + SEG_BUF);
    CoalesceOut out = {PyList_New(0), 0};
    if (!g || !plain || !out.list) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(packets); i++) {
        char *data;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(packets, i), &data, &len) < 0) goto fail;
        if (len <= 0 || len > SEG_BUF) {
            PyErr_Format(PyExc_ValueError, "packet %zd: %zd bytes (1..%d)", i, len, SEG_BUF);
            goto fail;
        }
        memcpy(plain + VNET_HDR_LEN, data, (size_t)len);
        gro_add(g, plain, (size_t)len, list_emit, &out);
    }
    gro_flush_all(g, list_emit, &out);
    if (out.failed) goto fail;
    PyMem_Free(g);
    PyMem_Free(plain);
    return out.list;
fail:
    PyMem_Free(g);
    PyMem_Free(plain);
    Py_XDECREF(out.list);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return NULL;
}

static PyObject *module_clamp_mss(PyObject *Py_UNUSED(m), PyObject *args) {
    Py_buffer pkt;
    int mss;
    if (!PyArg_ParseTuple(args, "y*i", &pkt, &mss)) return NULL;
    PyObject *result = NULL;
    uint8_t *copy = PyMem_Malloc((size_t)pkt.len + 1);
    if (!copy) { PyErr_NoMemory(); goto out; }
    memcpy(copy, pkt.buf, (size_t)pkt.len);
    if (pkt.len >= 20 && clamp_mss(copy, (size_t)pkt.len, mss))
        result = PyBytes_FromStringAndSize((const char *)copy, pkt.len);
    else {
        result = Py_None;
        Py_INCREF(result);
    }
out:
    PyMem_Free(copy);
    PyBuffer_Release(&pkt);
    return result;
}

static PyMethodDef module_methods[] = {
    {"segment", module_segment, METH_VARARGS, "cut a TCP super-packet into MSS-sized segments"},
    {"clamp_mss", module_clamp_mss, METH_VARARGS, "lower the MSS of a TCP SYN (tests)"},
    {"coalesce", module_coalesce, METH_VARARGS,
     "what the ETR writes to its TUN for these opened packets (tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mesh._fastpath", "lispmesh fast data path", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "OVERHEAD", OVERHEAD);
    PyModule_AddIntConstant(m, "VNET_HDR_LEN", VNET_HDR_LEN);
    return m;
}
