"""The one compiled part of fsstore: the running SHA-256 of a chained log's writer
(fsstore/_chainhash.c). Optional: where it cannot be built (no C compiler, or no OpenSSL
headers), the install goes on and fsstore hashes through hashlib, writing the same bytes."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fsstore._chainhash", ["fsstore/_chainhash.c"],
                             libraries=["crypto"], optional=True)])
