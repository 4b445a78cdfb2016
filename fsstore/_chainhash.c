/* The running SHA-256 a chained log's writer feeds frame after frame (chain_frames.py).

   The same hash as hashlib.sha256 (OpenSSL's), without the cost hashlib pays on every
   call: its digest() allocates, copies and frees an EVP context, so finalising a frame's
   chain value cost over half of what hashing the frame's kilobyte costs, about as much
   again keyed (HMAC's outer hash is a second object to copy, feed and finalise). Here a state is a SHA256_CTX inside the object, a copy
   or a digest a struct copy, and step() hashes a whole frame and makes its value in one
   call. The bytes it produces are hashlib's; chain.py uses hashlib when this module was
   not built (no C compiler or no OpenSSL headers: setup.py makes the build optional).

   A state is one writer's. Calls hold the GIL, but for an update of 64 KiB or more (a
   writer taking up its active segment: up to a segment, 1 GiB at most), which hashes
   into a copy of the state with the GIL released and stores it back after: other threads
   run meanwhile, and a second thread updating the same state then would lose one of the
   two updates (as any unsynchronised use would), never corrupt memory. */

#define PY_SSIZE_T_CLEAN
/* SHA256_Init/Update/Final: deprecated in OpenSSL 3 for the EVP interface, whose per-call
   cost is what this module avoids; still part of its API. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>

typedef struct {
    PyObject_HEAD
    SHA256_CTX ctx;
} Sha256Object;

static PyTypeObject Sha256Type;

static Sha256Object *sha256_alloc(void)
{
    return (Sha256Object *)Sha256Type.tp_alloc(&Sha256Type, 0);
}

/* hashlib releases the GIL from 2 KiB; a frame (about 1 KiB) keeps it, and so does
   anything short enough that handing the GIL over would cost more than the hashing. */
#define RELEASE_GIL_FROM (64 * 1024)

static PyObject *sha256_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Py_buffer data = {NULL, NULL};
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Sha256() takes its data positionally");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "|y*:Sha256", &data))
        return NULL;
    Sha256Object *self = (Sha256Object *)type->tp_alloc(type, 0);
    if (self != NULL) {
        SHA256_Init(&self->ctx);
        if (data.obj != NULL)
            SHA256_Update(&self->ctx, data.buf, (size_t)data.len);
    }
    if (data.obj != NULL)
        PyBuffer_Release(&data);
    return (PyObject *)self;
}

static PyObject *sha256_update(Sha256Object *self, PyObject *arg)
{
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (data.len >= RELEASE_GIL_FROM) {
        SHA256_CTX work = self->ctx;
        Py_BEGIN_ALLOW_THREADS
        SHA256_Update(&work, data.buf, (size_t)data.len);
        Py_END_ALLOW_THREADS
        self->ctx = work;
    }
    else {
        SHA256_Update(&self->ctx, data.buf, (size_t)data.len);
    }
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

static PyObject *sha256_copy(Sha256Object *self, PyObject *unused)
{
    Sha256Object *other = sha256_alloc();
    if (other != NULL)
        other->ctx = self->ctx;
    return (PyObject *)other;
}

static PyObject *sha256_digest(Sha256Object *self, PyObject *unused)
{
    SHA256_CTX final = self->ctx;  /* the state goes on: finalise a copy */
    unsigned char out[SHA256_DIGEST_LENGTH];
    SHA256_Final(out, &final);
    return PyBytes_FromStringAndSize((const char *)out, SHA256_DIGEST_LENGTH);
}

/* step(head, body, anchor, trailer, outer): one chained frame's whole hashing (see
   chain_frames.RunState.frame): feed head, body and anchor; the frame's chain value is
   the digest (outer None) or HMAC's value with outer; feed that value, then trailer.
   Returns the value. One call where it would take six, on every append. */
static PyObject *sha256_step(Sha256Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "step() takes head, body, anchor, trailer, outer");
        return NULL;
    }
    PyObject *outer = args[4];
    if (outer != Py_None && !PyObject_TypeCheck(outer, &Sha256Type)) {
        PyErr_Format(PyExc_TypeError, "step(): outer is a Sha256 or None, not %.100s",
                     Py_TYPE(outer)->tp_name);
        return NULL;
    }
    Py_buffer parts[4];
    int taken = 0;
    for (; taken < 4; taken++) {
        if (PyObject_GetBuffer(args[taken], &parts[taken], PyBUF_SIMPLE) < 0)
            goto done;
    }
    {
        /* the state moves on only once the value is made: a failure leaves it whole */
        SHA256_CTX work = self->ctx;
        unsigned char value[SHA256_DIGEST_LENGTH];
        for (int i = 0; i < 3; i++)
            SHA256_Update(&work, parts[i].buf, (size_t)parts[i].len);
        SHA256_CTX final = work;
        SHA256_Final(value, &final);
        if (outer != Py_None) {
            final = ((Sha256Object *)outer)->ctx;
            SHA256_Update(&final, value, SHA256_DIGEST_LENGTH);
            SHA256_Final(value, &final);
        }
        PyObject *result = PyBytes_FromStringAndSize((const char *)value,
                                                     SHA256_DIGEST_LENGTH);
        if (result != NULL) {
            SHA256_Update(&work, value, SHA256_DIGEST_LENGTH);
            SHA256_Update(&work, parts[3].buf, (size_t)parts[3].len);
            self->ctx = work;
        }
        for (int i = 0; i < taken; i++)
            PyBuffer_Release(&parts[i]);
        return result;
    }
done:
    for (int i = 0; i < taken; i++)
        PyBuffer_Release(&parts[i]);
    return NULL;
}

static PyMethodDef sha256_methods[] = {
    {"update", (PyCFunction)sha256_update, METH_O,
     "update($self, data, /)\n--\n\nFeed bytes (any contiguous buffer)."},
    {"copy", (PyCFunction)sha256_copy, METH_NOARGS,
     "copy($self, /)\n--\n\nAn independent copy."},
    {"digest", (PyCFunction)sha256_digest, METH_NOARGS,
     "digest($self, /)\n--\n\nThe SHA-256 of what was fed; the state is unchanged."},
    {"step", (PyCFunction)(void (*)(void))sha256_step, METH_FASTCALL,
     "step($self, head, body, anchor, trailer, outer, /)\n--\n\n"
     "Feed head, body and anchor; value = the digest, or HMAC's value with outer (HMAC's\n"
     "outer hash, fed K ^ opad) when it is not None; feed value and trailer; return value.\n"
     "On an error the state is as it was."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject Sha256Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fsstore._chainhash.Sha256",
    .tp_doc = "Sha256(data=b'', /)\n--\n\nA running SHA-256: hashlib.sha256's bytes.",
    .tp_basicsize = sizeof(Sha256Object),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = sha256_new,
    .tp_methods = sha256_methods,
};

static struct PyModuleDef chainhash_module = {
    PyModuleDef_HEAD_INIT, "_chainhash",
    "The running SHA-256 of a chained log's writer (see _chainhash.c).", -1, NULL};

PyMODINIT_FUNC PyInit__chainhash(void)
{
    if (PyType_Ready(&Sha256Type) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&chainhash_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&Sha256Type);
    if (PyModule_AddObject(module, "Sha256", (PyObject *)&Sha256Type) < 0) {
        Py_DECREF(&Sha256Type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
