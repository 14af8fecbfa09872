// SPDX-License-Identifier: GPL-2.0
/*
 * memcg_walk: every memory cgroup of one hierarchy, online and dying, in pre-order.
 *
 * Loaded by cgleak (crates/cgleak-bpf/src/loader.rs) as an iter/cgroup program attached
 * to the hierarchy's root directory with BPF_CGROUP_ITER_SELF_ONLY: the kernel calls it
 * once with that cgroup, holding cgroup_mutex (kernel/bpf/cgroup_iter.c,
 * cgroup_iter_seq_start), and once more with NULL at the end.
 *
 * Why a walk of our own over the memory css tree rather than the iterator's own order:
 * - the cgroup iterator skips dead cgroups (__cgroup_iter_seq_show: "cgroup is dead,
 *   skip this element"), and offline_css() clears cgrp->subsys[memory] of a dying
 *   cgroup, so neither reaches a dying memcg;
 * - a dying css stays on its parent's css->children until css_release_work_fn() unlinks
 *   it, under cgroup_mutex: holding that mutex, this walk sees every memcg exactly as
 *   css_next_descendant_pre() would (kernel/cgroup/cgroup.c);
 * - the css iterator kfuncs (bpf_iter_css_new, 6.7+) would need kfunc relocation in the
 *   loader, and 6.1 .. 6.6 do not have them.
 * The iterator's seq_file holds 8 pages per session (cgroup_iter.c: "only one session is
 * supported"), too little for thousands of memcgs, so records go to a ring buffer.
 *
 * Record layout: struct memcg_rec below, little-endian, parsed by src/record.rs.
 * Rebuild with `cargo xtask bpf` (Debian clang); the object is committed beside this file.
 */

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define PAI __attribute__((preserve_access_index))
#define __always_inline inline __attribute__((always_inline))

/* Helper IDs of include/uapi/linux/bpf.h (enum bpf_func_id). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *src) = (void *)115;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

/* CO-RE: clang records these as relocations that the loader resolves against the
 * running kernel's BTF (/sys/kernel/btf/vmlinux). */
enum { FIELD_BYTE_OFFSET = 0, FIELD_BYTE_SIZE = 1, FIELD_EXISTS = 2 };
enum { ENUMVAL_VALUE = 1 };
#define OFF(type, field) ((__u64)__builtin_preserve_field_info(((type *)0)->field, FIELD_BYTE_OFFSET))
#define SIZE(type, field) ((__u64)__builtin_preserve_field_info(((type *)0)->field, FIELD_BYTE_SIZE))
#define EXISTS(type, field) __builtin_preserve_field_info(((type *)0)->field, FIELD_EXISTS)
#define ENUMVAL(etype, name) ((__u64)__builtin_preserve_enum_value(*(etype *)name, ENUMVAL_VALUE))

/* The kernel types this program reads: only the fields it uses, matched by name. */
typedef struct { int counter; } atomic_t;
typedef struct { __s64 counter; } atomic64_t;
typedef atomic64_t atomic_long_t;
typedef struct refcount_struct { atomic_t refs; } refcount_t;
struct list_head { struct list_head *next, *prev; };

struct kernfs_node {
	const char *name;
	__u64 id;
} PAI;

struct cgroup_subsys_state;

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_subsys_state *subsys[1];
} PAI;

struct cgroup_subsys_state {
	struct cgroup *cgroup;
	struct list_head sibling;
	struct list_head children;
	unsigned int flags;
	struct cgroup_subsys_state *parent;
} PAI;

struct page_counter {
	atomic_long_t usage;
} PAI;

struct mem_cgroup_id {
	int id;
	refcount_t ref;
} PAI;

struct mem_cgroup_per_node {
	unsigned long lru_zone_size[1];
} PAI;

struct mem_cgroup {
	struct cgroup_subsys_state css;
	struct mem_cgroup_id id;
	struct page_counter memory;
	union {
		struct page_counter swap;
		struct page_counter memsw;
	};
	/* Only in kernels built with cgroup v1 support (CONFIG_MEMCG_V1 from 6.12). */
	struct page_counter kmem;
	struct mem_cgroup_per_node *nodeinfo[0];
} PAI;

enum cgroup_subsys_id { memory_cgrp_id = 4 };
enum lru_list {
	LRU_INACTIVE_ANON = 0,
	LRU_ACTIVE_ANON = 1,
	LRU_INACTIVE_FILE = 2,
	LRU_ACTIVE_FILE = 3,
	LRU_UNEVICTABLE = 4,
	NR_LRU_LISTS = 5
};

/* The iterator's context (kernel/bpf/cgroup_iter.c, struct bpf_iter__cgroup). */
struct bpf_iter__cgroup {
	void *meta;
	struct cgroup *cgroup;
};

/* include/linux/cgroup-defs.h: CSS_ONLINE, unchanged since 3.x. */
#define CSS_ONLINE 2

#define RECORD_VERSION 1
#define REC_MEMCG 1
#define NAME_MAX_BYTES 256
#define HAVE_KMEM 1
#define HAVE_LRU 2
/* Ceilings: climbing to the hierarchy's root, NUMA nodes, zones, and walk steps (each
 * memcg costs at most two steps: reached, then left). */
#define MAX_CLIMB 1024
#define MAX_NODES 64
#define MAX_ZONES 8
#define MAX_STEPS (1 << 23)

struct memcg_rec {
	__u16 len;		/* bytes of this record: header + name */
	__u8 version;		/* RECORD_VERSION */
	__u8 kind;		/* REC_MEMCG */
	__u32 css_flags;	/* css->flags: CSS_ONLINE and friends */
	__u64 cgroup_id;	/* kernfs node id of the memcg's cgroup */
	__u64 parent_cgroup_id; /* 0 for the hierarchy's root */
	__u32 depth;		/* 0 for the hierarchy's root */
	__s32 memcg_id;		/* memcg->id.id: 0 once released */
	__s32 id_refs;		/* memcg->id.ref */
	__u32 have;		/* HAVE_* */
	__u64 memory_pages;	/* memcg->memory.usage: the subtree's charge (see MemcgRecord::memory_bytes) */
	__u64 swap_pages;	/* memcg->swap (v2) or memcg->memsw (v1) usage */
	__u64 kmem_pages;	/* memcg->kmem usage, when HAVE_KMEM */
	__u64 file_lru_pages;	/* own inactive + active file LRU pages, when HAVE_LRU */
	__u64 anon_lru_pages;	/* own inactive + active anon LRU pages (shmem too), when HAVE_LRU */
	__u64 unevictable_lru_pages; /* own unevictable LRU pages (mlocked, ramfs), when HAVE_LRU */
	__u16 name_len;		/* bytes of name, no NUL */
	__u16 pad[3];
	char name[NAME_MAX_BYTES];
};

#define HEADER_BYTES (sizeof(struct memcg_rec) - NAME_MAX_BYTES)

enum walk_status {
	WALK_NOT_RUN = 0,
	WALK_DONE = 1,
	WALK_NO_MEMORY_CSS = 2, /* the cgroup's hierarchy has no memory controller */
	WALK_READ_FAILED = 3,	/* a kernel read failed mid-walk */
	WALK_TOO_DEEP = 4,	/* more than MAX_CLIMB levels above the start */
	WALK_TOO_LONG = 5,	/* MAX_STEPS reached */
};

struct walk_summary {
	__u32 version;
	__u32 status;		/* enum walk_status */
	__u64 visited;		/* memcgs reached */
	__u64 emitted;		/* records in the ring */
	__u64 dropped;		/* records the full ring refused */
	__u64 start_cgroup_id;	/* the cgroup the iterator was attached to */
	__u64 root_cgroup_id;	/* the hierarchy's root, where the walk began */
	__u64 steps;
	__u32 lru_zones;
	__u32 nodes;
};

/* Set by the loader before loading (read-only to the program). */
const volatile __u32 nr_node_ids = 1;

struct {
	__uint(type, 27 /* BPF_MAP_TYPE_RINGBUF */);
	__uint(max_entries, 1 << 20); /* sized by the loader */
} records SEC(".maps");

struct {
	__uint(type, 2 /* BPF_MAP_TYPE_ARRAY */);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_summary);
} summary SEC(".maps");

/* One record's scratch (too big for the 512-byte stack). */
struct scratch {
	struct memcg_rec rec;
	unsigned long lru[MAX_ZONES * 8];
};

struct {
	__uint(type, 6 /* BPF_MAP_TYPE_PERCPU_ARRAY */);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct walk_ctx {
	__u64 root; /* css of the hierarchy's root memcg */
	__u64 pos;  /* css being visited */
	__u32 depth;
	__u32 entering; /* 1: pos was just reached (emit it, then go down) */
	struct walk_summary *sum;
	struct scratch *s;
};

/* Reads without branches: every branch doubles what the verifier explores, and a failed
 * bpf_probe_read_kernel() zero-fills its destination (kernel/trace/bpf_trace.c), so an
 * unreadable (or NULL-based) address reads as 0 and what follows from it reads as 0 too. */
static __always_inline __u64 read_u64(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)addr);
	return v;
}

static __always_inline __s32 read_s32(__u64 addr)
{
	__s32 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)addr);
	return v;
}

/* kernfs id of a css's cgroup, 0 when unreadable (NULL css, cgroup or kernfs node: the
 * reads at small addresses fail). */
static __always_inline __u64 css_cgroup_id(__u64 css)
{
	__u64 cgrp = read_u64(css + OFF(struct cgroup_subsys_state, cgroup));
	__u64 kn = read_u64(cgrp + OFF(struct cgroup, kn));

	return read_u64(kn + OFF(struct kernfs_node, id));
}

/* What one NUMA node's LRU sizes add to (a bpf_loop callback's context: the verifier
 * checks the callback once, where a bounded loop over 64 nodes would be checked per node). */
struct lru_ctx {
	struct walk_ctx *c;
	__u64 memcg;
	__u64 lru_bytes;
	__u32 lists;
	__u32 zones;
	__u64 file, anon, unevictable;
	__u32 failed;
};

static long lru_node(__u32 node, void *ctx)
{
	struct lru_ctx *l = ctx;
	struct scratch *s = l->c->s;
	__u64 pn = read_u64(l->memcg + OFF(struct mem_cgroup, nodeinfo) + (__u64)node * 8);
	__u64 bytes = l->lru_bytes;
	__u32 z;

	/* A hole in the possible nodes has no per-node info. */
	if (!pn)
		return 0;
	if (bytes > sizeof(s->lru) || bytes == 0)
		return 1;
	if (bpf_probe_read_kernel(s->lru, bytes, (const void *)(pn + OFF(struct mem_cgroup_per_node, lru_zone_size)))) {
		l->failed = 1;
		return 1;
	}
	for (z = 0; z < MAX_ZONES && z < l->zones; z++) {
		__u32 base = z * l->lists;

		l->file += s->lru[(base + ENUMVAL(enum lru_list, LRU_INACTIVE_FILE)) & (MAX_ZONES * 8 - 1)];
		l->file += s->lru[(base + ENUMVAL(enum lru_list, LRU_ACTIVE_FILE)) & (MAX_ZONES * 8 - 1)];
		l->anon += s->lru[(base + ENUMVAL(enum lru_list, LRU_INACTIVE_ANON)) & (MAX_ZONES * 8 - 1)];
		l->anon += s->lru[(base + ENUMVAL(enum lru_list, LRU_ACTIVE_ANON)) & (MAX_ZONES * 8 - 1)];
		l->unevictable += s->lru[(base + ENUMVAL(enum lru_list, LRU_UNEVICTABLE)) & (MAX_ZONES * 8 - 1)];
	}
	return 0;
}

static __always_inline void lru_pages(struct walk_ctx *c, __u64 memcg, struct memcg_rec *r)
{
	struct lru_ctx l = {};

	l.c = c;
	l.memcg = memcg;
	l.lru_bytes = SIZE(struct mem_cgroup_per_node, lru_zone_size);
	l.lists = ENUMVAL(enum lru_list, NR_LRU_LISTS);
	if (l.lists == 0 || l.lists > 8 || l.lru_bytes > sizeof(c->s->lru))
		return;
	l.zones = l.lru_bytes / (8 * l.lists);
	if (l.zones == 0 || l.zones > MAX_ZONES)
		return;
	bpf_loop(nr_node_ids < MAX_NODES ? nr_node_ids : MAX_NODES, lru_node, &l, 0);
	if (l.failed)
		return;
	r->file_lru_pages = l.file;
	r->anon_lru_pages = l.anon;
	r->unevictable_lru_pages = l.unevictable;
	r->have |= HAVE_LRU;
	c->sum->lru_zones = l.zones;
}

static __always_inline void emit(struct walk_ctx *c, __u64 css)
{
	struct memcg_rec *r = &c->s->rec;
	__u64 memcg = css - OFF(struct mem_cgroup, css);
	__u64 cgrp = read_u64(css + OFF(struct cgroup_subsys_state, cgroup));
	__u64 kn = read_u64(cgrp + OFF(struct cgroup, kn));
	__u64 parent = read_u64(css + OFF(struct cgroup_subsys_state, parent));
	long n, failed;
	__u32 name_len;

	c->sum->visited++;
	r->len = 0;
	r->version = RECORD_VERSION;
	r->kind = REC_MEMCG;
	r->css_flags = 0;
	bpf_probe_read_kernel(&r->css_flags, sizeof(r->css_flags),
			      (const void *)(css + OFF(struct cgroup_subsys_state, flags)));
	r->cgroup_id = read_u64(kn + OFF(struct kernfs_node, id));
	/* The root's parent is NULL (the walk starts at the top): 0. */
	r->parent_cgroup_id = css_cgroup_id(parent);
	r->depth = c->depth;
	r->memcg_id = read_s32(memcg + OFF(struct mem_cgroup, id.id));
	r->id_refs = read_s32(memcg + OFF(struct mem_cgroup, id.ref.refs.counter));
	r->have = 0;
	r->memory_pages = read_u64(memcg + OFF(struct mem_cgroup, memory.usage.counter));
	r->swap_pages = read_u64(memcg + OFF(struct mem_cgroup, swap.usage.counter));
	r->kmem_pages = 0;
	if (EXISTS(struct mem_cgroup, kmem)) {
		r->kmem_pages = read_u64(memcg + OFF(struct mem_cgroup, kmem.usage.counter));
		r->have |= HAVE_KMEM;
	}
	r->file_lru_pages = 0;
	r->anon_lru_pages = 0;
	r->unevictable_lru_pages = 0;
	lru_pages(c, memcg, r);
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
	r->name[0] = 0;
	n = bpf_probe_read_kernel_str(r->name, NAME_MAX_BYTES, (const void *)read_u64(kn + OFF(struct kernfs_node, name)));
	/* n counts the NUL; an unreadable name is empty. */
	name_len = n > 0 ? (__u32)(n - 1) : 0;
	name_len &= NAME_MAX_BYTES - 1;
	r->name_len = name_len;
	r->len = HEADER_BYTES + name_len;
	/* 0, or a negative errno when the ring is full: counted without a branch. */
	failed = (long)((__u64)bpf_ringbuf_output(&records, r, HEADER_BYTES + name_len, 0) >> 63);
	c->sum->dropped += failed;
	c->sum->emitted += 1 - failed;
}

/* One step of css_next_descendant_pre(): emit a memcg when it is reached, then go to its
 * first child, else its next sibling, else up. */
static long walk_step(__u32 i, void *ctx)
{
	struct walk_ctx *c = ctx;
	__u64 pos = c->pos, next, parent;

	c->sum->steps++;
	if (c->entering) {
		emit(c, pos);
		next = read_u64(pos + OFF(struct cgroup_subsys_state, children.next));
		if (!next) {
			c->sum->status = WALK_READ_FAILED;
			return 1;
		}
		if (next != pos + OFF(struct cgroup_subsys_state, children)) {
			c->pos = next - OFF(struct cgroup_subsys_state, sibling);
			c->depth++;
			return 0;
		}
		c->entering = 0;
	}
	if (pos == c->root) {
		c->sum->status = WALK_DONE;
		return 1;
	}
	parent = read_u64(pos + OFF(struct cgroup_subsys_state, parent));
	next = read_u64(pos + OFF(struct cgroup_subsys_state, sibling.next));
	if (!parent || !next) {
		c->sum->status = WALK_READ_FAILED;
		return 1;
	}
	if (next != parent + OFF(struct cgroup_subsys_state, children)) {
		c->pos = next - OFF(struct cgroup_subsys_state, sibling);
		c->entering = 1;
		return 0;
	}
	c->pos = parent;
	c->depth--;
	return 0;
}

/* One step up from c->pos to its parent css; stops at the hierarchy's root. */
static long climb_step(__u32 i, void *ctx)
{
	struct walk_ctx *c = ctx;
	__u64 up = read_u64(c->pos + OFF(struct cgroup_subsys_state, parent));

	if (!up)
		return 1;
	c->pos = up;
	return 0;
}

SEC("iter/cgroup")
int memcg_walk(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;
	struct walk_ctx c = {};
	__u32 zero = 0;
	__u64 css;

	/* The call at the end of the iteration. */
	if (!cgrp)
		return 0;
	c.sum = bpf_map_lookup_elem(&summary, &zero);
	c.s = bpf_map_lookup_elem(&scratch, &zero);
	if (!c.sum || !c.s)
		return 0;
	c.sum->version = RECORD_VERSION;
	c.sum->nodes = nr_node_ids;
	c.sum->start_cgroup_id = read_u64(read_u64((__u64)cgrp + OFF(struct cgroup, kn)) + OFF(struct kernfs_node, id));
	css = read_u64((__u64)cgrp + OFF(struct cgroup, subsys) + ENUMVAL(enum cgroup_subsys_id, memory_cgrp_id) * 8);
	if (!css) {
		c.sum->status = WALK_NO_MEMORY_CSS;
		return 0;
	}
	/* A cgroup namespace's mount opens a cgroup below the root: walk the whole hierarchy. */
	c.pos = css;
	if (bpf_loop(MAX_CLIMB, climb_step, &c, 0) == MAX_CLIMB) {
		c.sum->status = WALK_TOO_DEEP;
		return 0;
	}
	css = c.pos;
	c.sum->root_cgroup_id = css_cgroup_id(css);
	c.root = css;
	c.pos = css;
	c.entering = 1;
	c.sum->status = WALK_TOO_LONG;
	bpf_loop(MAX_STEPS, walk_step, &c, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
