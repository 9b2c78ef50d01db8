/*
 * modelsafe._native: the loops that Python and numpy cannot run fast enough.
 * The module is optional: when it is missing, callers fall back to numpy (or Python).
 *
 * stream_copy: copy a large buffer with non-temporal (streaming) stores.
 *
 * Why: an async checkpoint snapshot copies gigabytes of tensors into host buffers that
 * are only read again later, by the background writer. memcpy below the C library's
 * non-temporal threshold (hundreds of MiB in glibc, far above one tensor) uses ordinary
 * stores, and the CPU then reads every destination cache line from memory before
 * overwriting it. Streaming stores skip that read: on the benchmark machine the copy the
 * training loop waits for runs about 1.5-2x faster.
 *
 * On x86-64 the body uses SSE2 streaming stores (part of the x86-64 baseline). Elsewhere,
 * and for overlapping buffers, it is memmove. The copy runs without the GIL, so two
 * threads can share one snapshot.
 *
 * tree_nodes_ok: the bounds check of a scikit-learn tree's node array (see
 * modelsafe/security/_validators.py, which holds the same rule in numpy). A forest's
 * check runs once per tree, with about a dozen numpy calls each; this is one pass over
 * the records.
 *
 * summarize_pickle_fast: the symbolic pickle-opcode reader of modelsafe/security/_opcodes.py
 * (default mode, a whole in-memory buffer), in C. It lives in _native_pickle.c; see there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#define MODELSAFE_STREAMING 1
#else
#define MODELSAFE_STREAMING 0
#endif

static void
copy_bytes(char *dst, const char *src, size_t n)
{
#if MODELSAFE_STREAMING
    size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    if (head > n) {
        head = n;
    }
    memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    for (; n >= 64; n -= 64, dst += 64, src += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + 48));
        _mm_stream_si128((__m128i *)dst, a);
        _mm_stream_si128((__m128i *)(dst + 16), b);
        _mm_stream_si128((__m128i *)(dst + 32), c);
        _mm_stream_si128((__m128i *)(dst + 48), d);
    }
    for (; n >= 16; n -= 16, dst += 16, src += 16) {
        _mm_stream_si128((__m128i *)dst, _mm_loadu_si128((const __m128i *)src));
    }
    memcpy(dst, src, n);
    /* Streaming stores are weakly ordered: make them visible before anyone reads dst. */
    _mm_sfence();
#else
    memcpy(dst, src, n);
#endif
}

static int64_t
load_int64(const char *at)
{
    int64_t value;
    memcpy(&value, at, sizeof value); /* record fields need not be aligned */
    return value;
}

PyDoc_STRVAR(tree_nodes_ok_doc,
"tree_nodes_ok(nodes, count, itemsize, left, right, feature, n_features, /)\n--\n\n"
"True if the count records of itemsize bytes in the buffer nodes describe a well-formed\n"
"tree: a leaf has both children -1; an inner node has both children after itself and\n"
"below count, and splits on a feature in [0, n_features). left, right and feature are\n"
"the byte offsets of the native int64 fields in a record.");

static PyObject *
tree_nodes_ok(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer nodes;
    Py_ssize_t count, itemsize, left_at, right_at, feature_at;
    long long n_features;
    if (!PyArg_ParseTuple(args, "y*nnnnnL:tree_nodes_ok", &nodes, &count, &itemsize, &left_at, &right_at,
                          &feature_at, &n_features)) {
        return NULL;
    }
    const Py_ssize_t field = (Py_ssize_t)sizeof(int64_t);
    if (count < 0 || itemsize <= 0 || left_at < 0 || right_at < 0 || feature_at < 0
        || left_at > itemsize - field || right_at > itemsize - field || feature_at > itemsize - field
        || count > nodes.len / itemsize) {
        PyBuffer_Release(&nodes);
        PyErr_SetString(PyExc_ValueError, "tree_nodes_ok: the record layout does not fit the buffer");
        return NULL;
    }
    const char *record = (const char *)nodes.buf;
    /* Without branches: leaves and inner nodes alternate unpredictably, and a mispredicted
     * branch per few records costs more than reading them. For an inner node, i < child <
     * count is one unsigned comparison: child - (i + 1) < count - (i + 1). */
    const uint64_t bound = n_features < 0 ? 0 : (uint64_t)n_features;
    uint64_t bad = 0;
    for (Py_ssize_t i = 0; i < count; i++, record += itemsize) {
        int64_t left = load_int64(record + left_at);
        int64_t right = load_int64(record + right_at);
        uint64_t feature = (uint64_t)load_int64(record + feature_at); /* negative wraps past the bound */
        uint64_t left_leaf = left == -1, right_leaf = right == -1;
        uint64_t after = (uint64_t)i + 1, span = (uint64_t)count - after; /* unsigned: no overflow */
        uint64_t inner_bad = ((uint64_t)left - after >= span) | ((uint64_t)right - after >= span) | (feature >= bound);
        bad |= (left_leaf ^ right_leaf) | (inner_bad & (left_leaf ^ 1));
    }
    int ok = bad == 0;
    PyBuffer_Release(&nodes);
    return PyBool_FromLong(ok);
}

PyDoc_STRVAR(stream_copy_doc,
"stream_copy(dst, src, /)\n--\n\n"
"Copy the bytes of src into dst (contiguous buffers of the same size), bypassing\n"
"the CPU caches where the platform has streaming stores. Releases the GIL.");

static PyObject *
stream_copy(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer dst, src;
    if (!PyArg_ParseTuple(args, "w*y*:stream_copy", &dst, &src)) {
        return NULL;
    }
    if (dst.len != src.len) {
        PyErr_Format(PyExc_ValueError,
                     "stream_copy: destination has %zd bytes, source %zd", dst.len, src.len);
        PyBuffer_Release(&dst);
        PyBuffer_Release(&src);
        return NULL;
    }
    char *d = (char *)dst.buf;
    const char *s = (const char *)src.buf;
    size_t n = (size_t)dst.len;
    Py_BEGIN_ALLOW_THREADS
    if (d + n <= s || s + n <= d) {
        copy_bytes(d, s, n);
    }
    else {
        memmove(d, s, n);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    Py_RETURN_NONE;
}

/* _native_pickle.c */
extern PyObject *modelsafe_summarize_pickle_fast(PyObject *module, PyObject *data);
extern const char modelsafe_summarize_pickle_fast_doc[];
extern PyObject *modelsafe_pickle_reader_table(PyObject *module, PyObject *unused);
extern const char modelsafe_pickle_reader_table_doc[];

static PyMethodDef native_methods[] = {
    {"stream_copy", stream_copy, METH_VARARGS, stream_copy_doc},
    {"tree_nodes_ok", tree_nodes_ok, METH_VARARGS, tree_nodes_ok_doc},
    {"summarize_pickle_fast", modelsafe_summarize_pickle_fast, METH_O, modelsafe_summarize_pickle_fast_doc},
    {"_pickle_reader_table", modelsafe_pickle_reader_table, METH_NOARGS, modelsafe_pickle_reader_table_doc},
    {NULL, NULL, 0, NULL},
};

static int
native_exec(PyObject *module)
{
    return PyModule_AddIntConstant(module, "STREAMING_STORES", MODELSAFE_STREAMING);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "modelsafe._native",
    "Streaming-store copies (the async checkpoint snapshot), the tree-node bounds check and the "
    "pickle-opcode reader's fast path.",
    0,
    native_methods,
    native_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
