/*
 * modelsafe._native: summarize_pickle_fast, a C twin of the symbolic pickle-opcode reader.
 *
 * modelsafe/security/_opcodes.py's _summarize reads a pickle stream without running it: it
 * models the stack, the memo, marks, frames and each container's expanded size, and records
 * every global the stream names and whether unpickling calls it. That reader is the
 * authority; this file holds the same reading of an in-memory buffer in its *default mode*
 * (no value mode, no embedded-pickle collection), about 30-50x faster.
 *
 * It answers only when it is sure: it returns (protocol, n_opcodes, end_offset, globals)
 * exactly when the Python reader would return a complete summary without problems, with
 * the same fields, and None in every other case:
 *
 *   - whenever the Python reader reports a problem (truncation, unknown opcode, framing
 *     against CPython's canonical rules, stack underflow, MARK missing, EXT codes, a call
 *     of something that is not a named global, a denial-of-service bound, ...);
 *   - whenever the stream holds something this reader does not model exactly (legacy
 *     string opcodes, persistent ids, text memo keys that are not plain digits, the memo
 *     budget being reached) or meets one of its own table caps, which are all lower than
 *     the Python reader's bounds.
 *
 * None is always safe: the caller then runs the Python reader, which gives the
 * authoritative summary and its exact messages. Every read of the buffer is bounds
 * checked, every table is capped, and sizes are kept in 64-bit unsigned arithmetic that
 * cannot overflow (all values are bounded by the buffer's length or by the caps).
 *
 * The rules below follow _opcodes.py's branches one by one; each comment names the Python
 * statement it models. Names in CAPITALS are the Python reader's constants.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- the Python reader's bounds (tests/security/test_native_reader.py checks they match) --- */

#define KEEP_STRING 1024            /* _opcodes._KEEP_STRING: longer string payloads become ANY */
#define MEMO_BUDGET (48LL << 20)    /* _opcodes._MEMO_BUDGET: estimated bytes of memoized values */
#define MAX_BOXES 400000            /* _opcodes._MAX_BOXES: memoizations of containers */
#define MAX_MEMO (1ULL << 24)       /* _bounds.MAX_MEMO: largest memo index */
#define MAX_EXPANDED (1LL << 27)    /* _bounds.MAX_EXPANDED: largest expanded size of a container */

/* --- this reader's own caps: reaching one means "not modelled here" (None), never a verdict --- */

#define CAP_STACK (1u << 20)        /* stack items (the Python reader allows 8 Mi) */
#define CAP_BOXES (1u << 22)        /* containers created over the whole stream */
#define CAP_MEMO (1u << 22)         /* memo slots (the Python reader's index bound is 16 Mi) */
#define CAP_MEMO_SLACK 1024u        /* memo keys must stay below 4 * (memo writes) + this */
#define CAP_GLOBALS (1u << 16)      /* distinct (module, name) pairs */
#define CAP_TEXT_KEY_DIGITS 9       /* GET/PUT text keys: plain decimal digits only */

/* Actions, numbered as in _opcode_table.py (the exported table is compared to OPS). */
enum {
    A_GENERIC, A_STRING, A_GLOBAL, A_INST, A_STACK_GLOBAL, A_MEMOIZE, A_PUT, A_GET, A_REDUCE,
    A_NEWOBJ, A_NEWOBJ_EX, A_OBJ, A_BUILD, A_EXT, A_PERSID, A_MARK, A_POP_MARK, A_DUP,
    A_KEEP, A_PROTO, A_FRAME, A_STOP,
    A_INT, A_CONST, A_EMPTY_DICT, A_DICT, A_SETITEMS, /* value mode only: never in this table */
    A_EMPTY, A_FROM_MARK, A_FROM_TOP, A_BYTES,
};

/* Argument kinds, numbered as in _opcode_table.py (FIXED = 1, ..., LINE2 = 6). */
enum { K_NONE, K_FIXED, K_LEN1, K_LEN4, K_LEN8, K_LINE, K_LINE2 };

typedef struct {
    uint8_t known;   /* a pickle opcode at all */
    uint8_t action;
    uint8_t kind;
    uint8_t size;    /* FIXED: argument bytes; LEN*: bytes of the length field */
    uint8_t is_signed;
    uint8_t to_mark; /* pops the items down to the topmost MARK */
    uint8_t pops;
    uint8_t pushes;
    uint8_t legacy;  /* a non-UTF-8 string opcode (LEGACY_STRINGS): not modelled here */
} OpSpec;

/* Generated from modelsafe.security._opcode_table.OPS (pickletools' opcode list). */
static const OpSpec OPS[256] = {
    [0x28] = {1, A_MARK, K_NONE, 0, 0, 0, 0, 1, 0},          /* MARK */
    [0x29] = {1, A_GENERIC, K_NONE, 0, 0, 0, 0, 1, 0},       /* EMPTY_TUPLE */
    [0x2e] = {1, A_STOP, K_NONE, 0, 0, 0, 1, 0, 0},          /* STOP */
    [0x30] = {1, A_GENERIC, K_NONE, 0, 0, 0, 1, 0, 0},       /* POP */
    [0x31] = {1, A_POP_MARK, K_NONE, 0, 0, 1, 0, 0, 0},      /* POP_MARK */
    [0x32] = {1, A_DUP, K_NONE, 0, 0, 0, 1, 2, 0},           /* DUP */
    [0x42] = {1, A_BYTES, K_LEN4, 4, 0, 0, 0, 1, 0},         /* BINBYTES */
    [0x43] = {1, A_BYTES, K_LEN1, 1, 0, 0, 0, 1, 0},         /* SHORT_BINBYTES */
    [0x46] = {1, A_GENERIC, K_LINE, 0, 0, 0, 0, 1, 0},       /* FLOAT */
    [0x47] = {1, A_GENERIC, K_FIXED, 8, 0, 0, 0, 1, 0},      /* BINFLOAT */
    [0x49] = {1, A_GENERIC, K_LINE, 0, 0, 0, 0, 1, 0},       /* INT */
    [0x4a] = {1, A_GENERIC, K_FIXED, 4, 0, 0, 0, 1, 0},      /* BININT */
    [0x4b] = {1, A_GENERIC, K_FIXED, 1, 0, 0, 0, 1, 0},      /* BININT1 */
    [0x4c] = {1, A_GENERIC, K_LINE, 0, 0, 0, 0, 1, 0},       /* LONG */
    [0x4d] = {1, A_GENERIC, K_FIXED, 2, 0, 0, 0, 1, 0},      /* BININT2 */
    [0x4e] = {1, A_GENERIC, K_NONE, 0, 0, 0, 0, 1, 0},       /* NONE */
    [0x50] = {1, A_PERSID, K_LINE, 0, 0, 0, 0, 1, 0},        /* PERSID */
    [0x51] = {1, A_PERSID, K_NONE, 0, 0, 0, 1, 1, 0},        /* BINPERSID */
    [0x52] = {1, A_REDUCE, K_NONE, 0, 0, 0, 2, 1, 0},        /* REDUCE */
    [0x53] = {1, A_STRING, K_LINE, 0, 0, 0, 0, 1, 1},        /* STRING */
    [0x54] = {1, A_STRING, K_LEN4, 4, 1, 0, 0, 1, 1},        /* BINSTRING */
    [0x55] = {1, A_STRING, K_LEN1, 1, 0, 0, 0, 1, 1},        /* SHORT_BINSTRING */
    [0x56] = {1, A_STRING, K_LINE, 0, 0, 0, 0, 1, 1},        /* UNICODE */
    [0x58] = {1, A_STRING, K_LEN4, 4, 0, 0, 0, 1, 0},        /* BINUNICODE */
    [0x5d] = {1, A_EMPTY, K_NONE, 0, 0, 0, 0, 1, 0},         /* EMPTY_LIST */
    [0x61] = {1, A_KEEP, K_NONE, 0, 0, 0, 2, 1, 0},          /* APPEND */
    [0x62] = {1, A_BUILD, K_NONE, 0, 0, 0, 2, 1, 0},         /* BUILD */
    [0x63] = {1, A_GLOBAL, K_LINE2, 0, 0, 0, 0, 1, 0},       /* GLOBAL */
    [0x64] = {1, A_FROM_MARK, K_NONE, 0, 0, 1, 0, 1, 0},     /* DICT */
    [0x65] = {1, A_KEEP, K_NONE, 0, 0, 1, 1, 1, 0},          /* APPENDS */
    [0x67] = {1, A_GET, K_LINE, 0, 0, 0, 0, 1, 0},           /* GET */
    [0x68] = {1, A_GET, K_FIXED, 1, 0, 0, 0, 1, 0},          /* BINGET */
    [0x69] = {1, A_INST, K_LINE2, 0, 0, 1, 0, 1, 0},         /* INST */
    [0x6a] = {1, A_GET, K_FIXED, 4, 0, 0, 0, 1, 0},          /* LONG_BINGET */
    [0x6c] = {1, A_FROM_MARK, K_NONE, 0, 0, 1, 0, 1, 0},     /* LIST */
    [0x6f] = {1, A_OBJ, K_NONE, 0, 0, 1, 1, 1, 0},           /* OBJ */
    [0x70] = {1, A_PUT, K_LINE, 0, 0, 0, 0, 0, 0},           /* PUT */
    [0x71] = {1, A_PUT, K_FIXED, 1, 0, 0, 0, 0, 0},          /* BINPUT */
    [0x72] = {1, A_PUT, K_FIXED, 4, 0, 0, 0, 0, 0},          /* LONG_BINPUT */
    [0x73] = {1, A_KEEP, K_NONE, 0, 0, 0, 3, 1, 0},          /* SETITEM */
    [0x74] = {1, A_FROM_MARK, K_NONE, 0, 0, 1, 0, 1, 0},     /* TUPLE */
    [0x75] = {1, A_KEEP, K_NONE, 0, 0, 1, 1, 1, 0},          /* SETITEMS */
    [0x7d] = {1, A_EMPTY, K_NONE, 0, 0, 0, 0, 1, 0},         /* EMPTY_DICT */
    [0x80] = {1, A_PROTO, K_FIXED, 1, 0, 0, 0, 0, 0},        /* PROTO */
    [0x81] = {1, A_NEWOBJ, K_NONE, 0, 0, 0, 2, 1, 0},        /* NEWOBJ */
    [0x82] = {1, A_EXT, K_FIXED, 1, 0, 0, 0, 1, 0},          /* EXT1 */
    [0x83] = {1, A_EXT, K_FIXED, 2, 0, 0, 0, 1, 0},          /* EXT2 */
    [0x84] = {1, A_EXT, K_FIXED, 4, 0, 0, 0, 1, 0},          /* EXT4 */
    [0x85] = {1, A_FROM_TOP, K_NONE, 0, 0, 0, 1, 1, 0},      /* TUPLE1 */
    [0x86] = {1, A_FROM_TOP, K_NONE, 0, 0, 0, 2, 1, 0},      /* TUPLE2 */
    [0x87] = {1, A_FROM_TOP, K_NONE, 0, 0, 0, 3, 1, 0},      /* TUPLE3 */
    [0x88] = {1, A_GENERIC, K_NONE, 0, 0, 0, 0, 1, 0},       /* NEWTRUE */
    [0x89] = {1, A_GENERIC, K_NONE, 0, 0, 0, 0, 1, 0},       /* NEWFALSE */
    [0x8a] = {1, A_GENERIC, K_LEN1, 1, 0, 0, 0, 1, 0},       /* LONG1 */
    [0x8b] = {1, A_GENERIC, K_LEN4, 4, 1, 0, 0, 1, 0},       /* LONG4 */
    [0x8c] = {1, A_STRING, K_LEN1, 1, 0, 0, 0, 1, 0},        /* SHORT_BINUNICODE */
    [0x8d] = {1, A_STRING, K_LEN8, 8, 0, 0, 0, 1, 0},        /* BINUNICODE8 */
    [0x8e] = {1, A_BYTES, K_LEN8, 8, 0, 0, 0, 1, 0},         /* BINBYTES8 */
    [0x8f] = {1, A_EMPTY, K_NONE, 0, 0, 0, 0, 1, 0},         /* EMPTY_SET */
    [0x90] = {1, A_KEEP, K_NONE, 0, 0, 1, 1, 1, 0},          /* ADDITEMS */
    [0x91] = {1, A_FROM_MARK, K_NONE, 0, 0, 1, 0, 1, 0},     /* FROZENSET */
    [0x92] = {1, A_NEWOBJ_EX, K_NONE, 0, 0, 0, 3, 1, 0},     /* NEWOBJ_EX */
    [0x93] = {1, A_STACK_GLOBAL, K_NONE, 0, 0, 0, 2, 1, 0},  /* STACK_GLOBAL */
    [0x94] = {1, A_MEMOIZE, K_NONE, 0, 0, 0, 1, 1, 0},       /* MEMOIZE */
    [0x95] = {1, A_FRAME, K_FIXED, 8, 0, 0, 0, 0, 0},        /* FRAME */
    [0x96] = {1, A_BYTES, K_LEN8, 8, 0, 0, 0, 1, 0},         /* BYTEARRAY8 */
    [0x97] = {1, A_GENERIC, K_NONE, 0, 0, 0, 0, 1, 0},       /* NEXT_BUFFER */
    [0x98] = {1, A_GENERIC, K_NONE, 0, 0, 0, 1, 1, 0},       /* READONLY_BUFFER */
};

/* --- the symbolic machine's values --- */

/* What a stack or memo slot holds. IT_ANY is 0, so zeroed memory is a slot holding ANY. */
enum { IT_ANY = 0, IT_MARK, IT_STR, IT_GLOBAL, IT_BOX };

typedef struct {
    uint32_t kind;
    uint32_t len;               /* IT_STR: payload length (<= KEEP_STRING) */
    union {
        const uint8_t *str;     /* IT_STR: the payload, inside the caller's buffer */
        uint32_t index;         /* IT_GLOBAL: entry in the globals table; IT_BOX: box number */
    } u;
} Item;

/* One (module, name) the stream names, as Found keeps it: offset of first use, invoked. */
typedef struct {
    const uint8_t *module;
    const uint8_t *name;
    size_t module_len, name_len;
    uint64_t hash;
    size_t offset;
    int invoked;
    PyObject *module_str, *name_str; /* decoded as _values.text does (UTF-8, surrogatepass) */
} Global;

typedef enum {
    R_RUNNING,  /* keep reading */
    R_DONE,     /* STOP with a complete stream: the answer is the tuple */
    R_REFUSED,  /* the Python reader reports a problem here */
    R_BAIL,     /* not modelled here, or one of this reader's caps: let the Python reader decide */
} Status;

typedef struct {
    const uint8_t *buf;
    size_t n;

    Item *stack;
    size_t sp, stack_cap;

    Item *memo;                 /* dense: slot k is memo key k; unset slots are ANY */
    size_t memo_cap;
    uint64_t memo_writes;       /* MEMOIZE/PUT opcodes so far (keeps the memo dense) */
    long long memo_room;        /* _MEMO_BUDGET's remaining room */
    long boxes_left;            /* _MAX_BOXES's remaining memoizations of containers */

    int64_t *box_w;             /* expanded size of each container, by box number */
    size_t n_boxes, box_cap;

    Global *globals;
    size_t n_globals, globals_cap;
    uint32_t *table;            /* open addressing: 0 empty, else globals index + 1 */
    size_t table_size;          /* power of two, at least twice n_globals */
} Reader;

/* Grow an array of `item` bytes to hold at least `need` elements (capacity doubles, at most `cap`). */
static int
grow_array(void **array, size_t *capacity, size_t need, size_t cap, size_t item)
{
    if (need <= *capacity) {
        return 0;
    }
    if (need > cap) {
        return -1;
    }
    size_t size = *capacity ? *capacity : 64;
    while (size < need) {
        size *= 2;
    }
    if (size > cap) {
        size = cap;
    }
    void *bigger = realloc(*array, size * item); /* size <= 2^22, item < 128 bytes: no overflow */
    if (bigger == NULL) {
        return -1;
    }
    *array = bigger;
    *capacity = size;
    return 0;
}

static inline uint64_t
little_endian(const uint8_t *at, unsigned size)
{
    uint64_t value = 0;
    for (unsigned i = size; i > 0; i--) {
        value = (value << 8) | at[i - 1];
    }
    return value;
}

static inline Status
push(Reader *r, Item item)
{
    if (r->sp == r->stack_cap
        && grow_array((void **)&r->stack, &r->stack_cap, r->sp + 1, CAP_STACK, sizeof(Item)) < 0) {
        return R_BAIL;
    }
    r->stack[r->sp++] = item;
    return R_RUNNING;
}

static inline Item
any_item(void)
{
    Item item = {IT_ANY, 0, {NULL}};
    return item;
}

/* _bounds.boxed(w): a new container of expanded size w, pushed. */
static Status
push_box(Reader *r, int64_t w)
{
    if (w > MAX_EXPANDED) {
        return R_REFUSED; /* LimitExceeded: a billion-laughs stream */
    }
    if (r->n_boxes == r->box_cap
        && grow_array((void **)&r->box_w, &r->box_cap, r->n_boxes + 1, CAP_BOXES, sizeof(int64_t)) < 0) {
        return R_BAIL;
    }
    r->box_w[r->n_boxes] = w;
    Item item = {IT_BOX, 0, {NULL}};
    item.u.index = (uint32_t)r->n_boxes++;
    return push(r, item);
}

/* _bounds.grow(box, w). Both terms are at most MAX_EXPANDED * CAP_STACK < 2^48: no overflow. */
static inline Status
grow_box(Reader *r, uint32_t box, int64_t w)
{
    r->box_w[box] += w;
    return r->box_w[box] > MAX_EXPANDED ? R_REFUSED : R_RUNNING;
}

/* _bounds.weight(stack[from:sp]): one per item, plus what each box holds beyond itself. */
static int64_t
weight(const Reader *r, size_t from)
{
    int64_t total = (int64_t)(r->sp - from);
    for (size_t i = from; i < r->sp; i++) {
        if (r->stack[i].kind == IT_BOX) {
            total += r->box_w[r->stack[i].u.index] - 1;
        }
    }
    return total;
}

/* _opcode_table.pop_to_mark: the items after the topmost MARK start at *from; the MARK is at
 * *from - 1. Whatever path the Python helper takes through its list of mark positions, it
 * returns the items above the topmost MARK on the stack (a mark moved by DUP or the memo
 * included), or raises "MARK missing". The caller drops the items with r->sp = *from - 1. */
static Status
find_mark(const Reader *r, size_t *from)
{
    for (size_t i = r->sp; i > 0; i--) {
        if (r->stack[i - 1].kind == IT_MARK) {
            *from = i;
            return R_RUNNING;
        }
    }
    return R_REFUSED;
}

static uint64_t
hash_name(const uint8_t *module, size_t module_len, const uint8_t *name, size_t name_len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < module_len; i++) {
        h = (h ^ module[i]) * 1099511628211ULL;
    }
    h = (h ^ 0x100) * 1099511628211ULL; /* a separator no byte equals */
    for (size_t i = 0; i < name_len; i++) {
        h = (h ^ name[i]) * 1099511628211ULL;
    }
    return h;
}

static int
rehash(Reader *r, size_t size)
{
    uint32_t *table = calloc(size, sizeof(uint32_t));
    if (table == NULL) {
        return -1;
    }
    for (size_t g = 0; g < r->n_globals; g++) {
        size_t slot = (size_t)r->globals[g].hash & (size - 1);
        while (table[slot]) {
            slot = (slot + 1) & (size - 1);
        }
        table[slot] = (uint32_t)(g + 1);
    }
    free(r->table);
    r->table = table;
    r->table_size = size;
    return 0;
}

/* Found.record for the global (module, name) created at `offset` (every global is recorded
 * when GLOBAL, INST or STACK_GLOBAL creates it, so the first creation gives the offset).
 * Names are compared as bytes: UTF-8 decoding (surrogatepass) is one-to-one, so equal bytes
 * are equal names. A name _values.text would not decode is the Python reader's problem. */
static Status
record_global(Reader *r, const uint8_t *module, size_t module_len, const uint8_t *name, size_t name_len,
              size_t offset, int invoked, uint32_t *index)
{
    uint64_t h = hash_name(module, module_len, name, name_len);
    if (r->table_size) {
        size_t slot = (size_t)h & (r->table_size - 1);
        while (r->table[slot]) {
            Global *g = &r->globals[r->table[slot] - 1];
            if (g->hash == h && g->module_len == module_len && g->name_len == name_len
                && memcmp(g->module, module, module_len) == 0 && memcmp(g->name, name, name_len) == 0) {
                g->invoked |= invoked;
                *index = r->table[slot] - 1;
                return R_RUNNING;
            }
            slot = (slot + 1) & (r->table_size - 1);
        }
    }
    if (module_len > PY_SSIZE_T_MAX || name_len > PY_SSIZE_T_MAX) {
        return R_BAIL;
    }
    PyObject *module_str = PyUnicode_DecodeUTF8((const char *)module, (Py_ssize_t)module_len, "surrogatepass");
    PyObject *name_str = module_str ? PyUnicode_DecodeUTF8((const char *)name, (Py_ssize_t)name_len,
                                                           "surrogatepass") : NULL;
    if (name_str == NULL) {
        Py_XDECREF(module_str);
        int not_utf8 = PyErr_ExceptionMatches(PyExc_UnicodeDecodeError);
        PyErr_Clear();
        return not_utf8 ? R_REFUSED : R_BAIL; /* not UTF-8: the Python reader refuses; else out of memory */
    }
    if (grow_array((void **)&r->globals, &r->globals_cap, r->n_globals + 1, CAP_GLOBALS, sizeof(Global)) < 0
        || (2 * (r->n_globals + 1) > r->table_size && rehash(r, r->table_size ? 2 * r->table_size : 64) < 0)) {
        Py_DECREF(module_str);
        Py_DECREF(name_str);
        return R_BAIL;
    }
    Global *g = &r->globals[r->n_globals];
    g->module = module;
    g->name = name;
    g->module_len = module_len;
    g->name_len = name_len;
    g->hash = h;
    g->offset = offset;
    g->invoked = invoked;
    g->module_str = module_str;
    g->name_str = name_str;
    size_t slot = (size_t)h & (r->table_size - 1);
    while (r->table[slot]) {
        slot = (slot + 1) & (r->table_size - 1);
    }
    r->table[slot] = (uint32_t)(r->n_globals + 1);
    *index = (uint32_t)r->n_globals++;
    return R_RUNNING;
}

/* _opcodes' call(target): a named global is recorded as invoked; anything else is a problem. */
static inline Status
call(Reader *r, Item target)
{
    if (target.kind != IT_GLOBAL) {
        return R_REFUSED;
    }
    r->globals[target.u.index].invoked = 1;
    return R_RUNNING;
}

/* A GET/PUT text key. The Python reader takes int(line), which also accepts signs, spaces and
 * underscores; only the pickler's own spelling (decimal digits) is modelled here. */
static Status
text_key(const uint8_t *line, size_t len, uint64_t *key)
{
    if (len == 0 || len > CAP_TEXT_KEY_DIGITS) {
        return R_BAIL;
    }
    uint64_t value = 0;
    for (size_t i = 0; i < len; i++) {
        if (line[i] < '0' || line[i] > '9') {
            return R_BAIL;
        }
        value = value * 10 + (uint64_t)(line[i] - '0');
    }
    *key = value;
    return R_RUNNING;
}

/* MEMOIZE / PUT: the branch of _opcodes that stores the stack's top under `key`. */
static Status
memoize(Reader *r, uint64_t key)
{
    if (key >= MAX_MEMO) {
        return R_REFUSED; /* memo_over */
    }
    if (r->sp == 0) {
        return R_REFUSED; /* stack[-1] of an empty stack */
    }
    r->memo_writes++;
    Item top = r->stack[r->sp - 1];
    if (top.kind == IT_ANY) {
        if (key < r->memo_cap) {
            r->memo[key] = top; /* memo.pop(key, None): the slot reads as ANY again */
        }
        return R_RUNNING;
    }
    if (top.kind == IT_BOX) {
        if (r->boxes_left == 0) {
            return R_REFUSED; /* LimitExceeded: too many containers */
        }
        r->boxes_left--;
    }
    else if (top.kind == IT_GLOBAL) {
        r->memo_room -= 200;
    }
    else {
        /* A string or a MARK: the Python reader keeps it only while memo_room > 0, and past that
         * forgets the key instead. Not modelled: bail. */
        if (r->memo_room <= 0) {
            return R_BAIL;
        }
        r->memo_room -= top.kind == IT_STR ? (long long)top.len + 90 : 200;
    }
    if (key >= r->memo_cap) {
        size_t old = r->memo_cap;
        /* Picklers number memo keys densely; sparse keys would make the dense table large. */
        if (key > 4 * r->memo_writes + CAP_MEMO_SLACK
            || grow_array((void **)&r->memo, &r->memo_cap, (size_t)key + 1, CAP_MEMO, sizeof(Item)) < 0) {
            return R_BAIL;
        }
        memset(r->memo + old, 0, (r->memo_cap - old) * sizeof(Item)); /* new slots hold ANY */
    }
    r->memo[key] = top;
    return R_RUNNING;
}

/* The argument of one opcode, as the Python reader decodes it. */
typedef struct {
    uint64_t value;          /* FIXED: the little-endian value */
    const uint8_t *payload;  /* LEN*: the payload; LINE: the line; LINE2: the second line */
    size_t payload_len;
    const uint8_t *first;    /* LINE2: the first line */
    size_t first_len;
    size_t second;           /* where the argument's second read starts (straddle's `starts`) */
} Arg;

/* Decode the argument at *pos (just after the opcode byte); *pos moves past it. */
static Status
read_arg(const Reader *r, const OpSpec *op, size_t *pos, Arg *arg)
{
    const uint8_t *buf = r->buf;
    const size_t n = r->n;
    size_t p = *pos; /* p <= n throughout */
    arg->second = p;
    switch (op->kind) {
    case K_FIXED:
        if (op->size > n - p) {
            return R_REFUSED; /* truncated */
        }
        arg->value = little_endian(buf + p, op->size);
        p += op->size;
        break;
    case K_LEN1:
    case K_LEN4:
    case K_LEN8: {
        if (op->size > n - p) {
            return R_REFUSED; /* truncated */
        }
        uint64_t length = little_endian(buf + p, op->size);
        if (op->is_signed && ((length >> (8u * op->size - 1u)) & 1u)) {
            return R_REFUSED; /* a negative length (LONG4; BINSTRING is never read here) */
        }
        p += op->size;
        arg->second = p;
        if (length > n - p) {
            return R_REFUSED; /* truncated (a payload skipped past the buffer's end) */
        }
        arg->payload = buf + p;
        arg->payload_len = (size_t)length;
        p += (size_t)length;
        break;
    }
    case K_LINE:
    case K_LINE2: {
        const uint8_t *stop = memchr(buf + p, '\n', n - p);
        if (stop == NULL) {
            return R_REFUSED; /* truncated */
        }
        arg->payload = buf + p;
        arg->payload_len = (size_t)(stop - (buf + p));
        p += arg->payload_len + 1;
        if (op->kind == K_LINE2) {
            arg->first = arg->payload;
            arg->first_len = arg->payload_len;
            arg->second = p;
            stop = memchr(buf + p, '\n', n - p);
            if (stop == NULL) {
                return R_REFUSED;
            }
            arg->payload = buf + p;
            arg->payload_len = (size_t)(stop - (buf + p));
            p += arg->payload_len + 1;
        }
        break;
    }
    default:
        break;
    }
    *pos = p;
    return R_RUNNING;
}

/* Results of a complete reading. */
typedef struct {
    unsigned protocol;
    uint64_t count;
    size_t end;
} Outcome;

/* The loop of _opcodes._summarize, one opcode at a time, in default mode. */
static Status
read_stream(Reader *r, Outcome *out)
{
    const size_t n = r->n;
    const size_t no_frame = SIZE_MAX; /* _NO_FRAME: real frame ends are at most n < SIZE_MAX */
    size_t fabs = no_frame;           /* absolute end of the current frame */
    size_t pos = 0;
    uint64_t memo_next = 0;           /* MEMOIZE's next key */

    for (;;) {
        if (pos >= fabs) {
            fabs = no_frame; /* the frame's last opcode ended exactly at its end */
        }
        if (pos >= n) {
            return R_REFUSED; /* the stream ends before STOP */
        }
        const size_t at = pos;
        const uint8_t code = r->buf[pos++];
        const OpSpec *op = &OPS[code];
        if (!op->known) {
            return R_REFUSED; /* unknown opcode */
        }
        if (op->legacy || op->action == A_PERSID) {
            return R_BAIL; /* legacy string decoding and persistent ids: the Python reader models them */
        }
        out->count++;

        Arg arg = {0, NULL, 0, NULL, 0, 0};
        Status st = read_arg(r, op, &pos, &arg);
        if (st != R_RUNNING) {
            return st;
        }
        /* _bounds.straddle: an argument may run past its frame's end only when one of its reads
         * starts exactly there; everything after is then unframed. pos <= n here. */
        if (pos > fabs) {
            if (fabs != at + 1 && fabs != arg.second) {
                return R_REFUSED;
            }
            fabs = no_frame;
        }

        size_t from; /* where the items of a container opcode start on the stack */
        Item item;
        switch (op->action) {
        case A_MEMOIZE:
            st = memoize(r, memo_next++);
            break;
        case A_PUT:
            if (op->kind == K_LINE) {
                st = text_key(arg.payload, arg.payload_len, &arg.value);
            }
            if (st == R_RUNNING) {
                st = memoize(r, arg.value);
            }
            break;
        case A_GET:
            if (op->kind == K_LINE) {
                st = text_key(arg.payload, arg.payload_len, &arg.value);
            }
            if (st == R_RUNNING) {
                /* memo.get(key, ANY); keys past the table were never stored (memoize bails first) */
                st = push(r, arg.value < r->memo_cap ? r->memo[arg.value] : any_item());
            }
            break;
        case A_GENERIC:
            if (op->to_mark) {
                if ((st = find_mark(r, &from)) != R_RUNNING) {
                    break;
                }
                r->sp = from - 1;
            }
            if (op->pops > r->sp) {
                st = R_REFUSED; /* stack underflow */
                break;
            }
            r->sp -= op->pops;
            for (unsigned i = 0; i < op->pushes && st == R_RUNNING; i++) {
                st = push(r, any_item());
            }
            break;
        case A_STRING:
            /* Only the UTF-8 string opcodes get here (legacy ones bailed). The payload is kept
             * when short enough to name a global, else it is ANY. */
            if (arg.payload_len <= KEEP_STRING) {
                item.kind = IT_STR;
                item.len = (uint32_t)arg.payload_len;
                item.u.str = arg.payload;
                st = push(r, item);
            }
            else {
                st = push(r, any_item());
            }
            break;
        case A_KEEP: {
            /* APPEND(S), SETITEM(S), ADDITEMS: the items go into the target below them. */
            size_t drop;
            if (op->to_mark) {
                if ((st = find_mark(r, &from)) != R_RUNNING) {
                    break;
                }
                drop = from - 1;
            }
            else {
                if (r->sp < op->pops) {
                    st = R_REFUSED; /* no target below the items */
                    break;
                }
                from = drop = r->sp - (op->pops - 1);
            }
            int64_t w = weight(r, from);
            r->sp = drop;
            if (r->sp == 0) {
                st = R_REFUSED; /* stack[-1] of an empty stack */
                break;
            }
            Item target = r->stack[r->sp - 1];
            if (target.kind == IT_BOX) {
                st = grow_box(r, target.u.index, w);
            }
            else if (target.kind == IT_GLOBAL) {
                r->globals[target.u.index].invoked = 1; /* list.extend, __setitem__ of the global itself */
            }
            break;
        }
        case A_EMPTY:
            st = push_box(r, 1);
            break;
        case A_FROM_MARK:
        case A_FROM_TOP: {
            size_t drop;
            if (op->action == A_FROM_MARK) {
                if ((st = find_mark(r, &from)) != R_RUNNING) {
                    break;
                }
                drop = from - 1;
            }
            else {
                if (op->pops > r->sp) {
                    st = R_REFUSED; /* stack underflow */
                    break;
                }
                from = drop = r->sp - op->pops;
            }
            int64_t w = weight(r, from);
            r->sp = drop;
            st = push_box(r, 1 + w);
            break;
        }
        case A_NEWOBJ:
        case A_REDUCE: {
            if (r->sp < 2) {
                st = R_REFUSED;
                break;
            }
            Item args = r->stack[--r->sp];
            Item target = r->stack[--r->sp];
            if ((st = call(r, target)) != R_RUNNING) {
                break;
            }
            st = push_box(r, 1 + (args.kind == IT_BOX ? r->box_w[args.u.index] : 1));
            break;
        }
        case A_STACK_GLOBAL: {
            if (r->sp < 2) {
                st = R_REFUSED;
                break;
            }
            Item qual = r->stack[--r->sp];
            Item mod = r->stack[--r->sp];
            if (qual.kind != IT_STR || mod.kind != IT_STR) {
                st = R_REFUSED; /* a module or name computed at run time */
                break;
            }
            item.kind = IT_GLOBAL;
            item.len = 0;
            st = record_global(r, mod.u.str, mod.len, qual.u.str, qual.len, at, 0, &item.u.index);
            if (st == R_RUNNING) {
                st = push(r, item);
            }
            break;
        }
        case A_BUILD: {
            if (r->sp < 2) {
                st = R_REFUSED;
                break;
            }
            Item state = r->stack[--r->sp];
            Item target = r->stack[r->sp - 1];
            if (target.kind == IT_GLOBAL) {
                r->globals[target.u.index].invoked = 1;
            }
            else if (target.kind == IT_BOX) {
                st = grow_box(r, target.u.index, state.kind == IT_BOX ? r->box_w[state.u.index] : 1);
            }
            break;
        }
        case A_MARK:
            item.kind = IT_MARK;
            item.len = 0;
            item.u.str = NULL;
            st = push(r, item);
            break;
        case A_GLOBAL:
        case A_INST:
            item.kind = IT_GLOBAL;
            item.len = 0;
            st = record_global(r, arg.first, arg.first_len, arg.payload, arg.payload_len, at,
                               op->action == A_INST, &item.u.index);
            if (st != R_RUNNING) {
                break;
            }
            if (op->action == A_GLOBAL) {
                st = push(r, item);
            }
            else if ((st = find_mark(r, &from)) == R_RUNNING) {
                int64_t w = weight(r, from);
                r->sp = from - 1;
                st = push_box(r, 1 + w);
            }
            break;
        case A_NEWOBJ_EX: {
            if (r->sp < 3) {
                st = R_REFUSED;
                break;
            }
            int64_t extra = weight(r, r->sp - 2);
            r->sp -= 2;
            Item target = r->stack[--r->sp];
            if ((st = call(r, target)) == R_RUNNING) {
                st = push_box(r, 1 + extra);
            }
            break;
        }
        case A_OBJ: {
            if ((st = find_mark(r, &from)) != R_RUNNING) {
                break;
            }
            if (from == r->sp) {
                st = R_REFUSED; /* OBJ without a class */
                break;
            }
            if ((st = call(r, r->stack[from])) != R_RUNNING) {
                break;
            }
            int64_t w = weight(r, from);
            r->sp = from - 1;
            st = push_box(r, w);
            break;
        }
        case A_BYTES:
            st = push(r, any_item());
            break;
        case A_PROTO:
            if (arg.value > out->protocol) {
                out->protocol = (unsigned)arg.value; /* one byte */
            }
            break;
        case A_FRAME:
            /* at + 9 == pos <= n; and, inside a frame, pos <= fabs (straddle above). */
            if (fabs == no_frame) {
                if (arg.value > n - pos) {
                    /* A frame that claims more bytes than the buffer has: nothing can end it, so
                     * the Python reader refuses the stream at its STOP (or its truncation). */
                    return R_REFUSED;
                }
                fabs = pos + (size_t)arg.value;
            }
            else if (arg.value > fabs - pos) {
                return R_REFUSED; /* frame_in_frame */
            }
            break;
        case A_STOP:
            if (r->sp == 0 || r->stack[r->sp - 1].kind == IT_MARK) {
                return R_REFUSED; /* nothing to return */
            }
            if (fabs != no_frame && pos < fabs) {
                return R_REFUSED; /* stop_problem: STOP inside a frame that goes on */
            }
            out->end = pos;
            return R_DONE;
        case A_EXT:
            return R_REFUSED; /* copyreg's extension registry is not trusted */
        case A_POP_MARK:
            if ((st = find_mark(r, &from)) == R_RUNNING) {
                r->sp = from - 1;
            }
            break;
        case A_DUP:
            if (r->sp == 0) {
                st = R_REFUSED;
                break;
            }
            st = push(r, r->stack[r->sp - 1]);
            break;
        default:
            st = R_BAIL; /* value-mode actions never appear in the default table */
            break;
        }
        if (st != R_RUNNING) {
            return st;
        }
    }
}

static void
reader_free(Reader *r)
{
    for (size_t g = 0; g < r->n_globals; g++) {
        Py_DECREF(r->globals[g].module_str);
        Py_DECREF(r->globals[g].name_str);
    }
    free(r->globals);
    free(r->table);
    free(r->stack);
    free(r->memo);
    free(r->box_w);
}

/* (protocol, n_opcodes, end_offset, [(module, name, offset, invoked), ...]) */
static PyObject *
build_result(const Reader *r, const Outcome *out)
{
    PyObject *refs = PyList_New((Py_ssize_t)r->n_globals);
    if (refs == NULL) {
        return NULL;
    }
    for (size_t g = 0; g < r->n_globals; g++) {
        const Global *glob = &r->globals[g];
        PyObject *ref = Py_BuildValue("(OOnO)", glob->module_str, glob->name_str, (Py_ssize_t)glob->offset,
                                      glob->invoked ? Py_True : Py_False);
        if (ref == NULL) {
            Py_DECREF(refs);
            return NULL;
        }
        PyList_SET_ITEM(refs, (Py_ssize_t)g, ref);
    }
    return Py_BuildValue("(IKnN)", out->protocol, (unsigned long long)out->count, (Py_ssize_t)out->end, refs);
}

const char modelsafe_summarize_pickle_fast_doc[] =
"summarize_pickle_fast(buffer, /)\n--\n\n"
"The summary modelsafe.security._opcodes' reader gives of the pickle stream at the start of\n"
"buffer (default mode), as (protocol, n_opcodes, end_offset, [(module, name, offset,\n"
"invoked), ...]) when the stream is complete and has no problem; None when it is not, or\n"
"when the stream holds something this reader leaves to the Python one.";

PyObject *
modelsafe_summarize_pickle_fast(PyObject *module, PyObject *data)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Reader r;
    memset(&r, 0, sizeof r);
    r.buf = (const uint8_t *)view.buf;
    r.n = (size_t)view.len;
    r.memo_room = MEMO_BUDGET;
    r.boxes_left = MAX_BOXES;
    Outcome out = {0, 0, 0};
    /* The GIL stays held: the buffer cannot change while it is read (a bytearray included). */
    Status st = read_stream(&r, &out);
    PyObject *result;
    if (st == R_DONE) {
        result = build_result(&r, &out);
    }
    else {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    reader_free(&r);
    PyBuffer_Release(&view);
    return result;
}

const char modelsafe_pickle_reader_table_doc[] =
"_pickle_reader_table()\n--\n\n"
"For the tests: the C reader's opcode table, as a list of 256 entries (None, or\n"
"(action, kind, size, signed, to_mark, pops, pushes, legacy) as in _opcode_table.OPS),\n"
"and a dict of the bounds it copies from the Python reader and of its own caps.";

PyObject *
modelsafe_pickle_reader_table(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *ops = PyList_New(256);
    if (ops == NULL) {
        return NULL;
    }
    for (int b = 0; b < 256; b++) {
        const OpSpec *op = &OPS[b];
        PyObject *entry;
        if (op->known) {
            entry = Py_BuildValue("(iiiOOiiO)", op->action, op->kind, op->size, op->is_signed ? Py_True : Py_False,
                                  op->to_mark ? Py_True : Py_False, op->pops, op->pushes,
                                  op->legacy ? Py_True : Py_False);
            if (entry == NULL) {
                Py_DECREF(ops);
                return NULL;
            }
        }
        else {
            Py_INCREF(Py_None);
            entry = Py_None;
        }
        PyList_SET_ITEM(ops, b, entry);
    }
    return Py_BuildValue(
        "(N{sisLsisKsLsIsIsIsIsI})", ops, "KEEP_STRING", KEEP_STRING, "MEMO_BUDGET", (long long)MEMO_BUDGET,
        "MAX_BOXES", MAX_BOXES, "MAX_MEMO", (unsigned long long)MAX_MEMO, "MAX_EXPANDED", (long long)MAX_EXPANDED,
        "CAP_STACK", CAP_STACK, "CAP_BOXES", CAP_BOXES, "CAP_MEMO", CAP_MEMO, "CAP_MEMO_SLACK", CAP_MEMO_SLACK,
        "CAP_GLOBALS", CAP_GLOBALS);
}
