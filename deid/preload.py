"""The last module the workers' forkserver imports: it freezes everything imported before it.

:func:`gc.freeze` moves those objects into the collector's permanent generation, so that the
workers' collections no longer walk the modules they were forked with, the memory pages they
share with the server stay shared, and the server exits without a final collection (a tenth of
a second with distributed loaded).
"""

import gc

gc.freeze()
