"""The last module the workers' forkserver imports: it ties the server to the driver and freezes
everything imported before it.

The forkserver asks to be killed when the driver exits (:func:`deid.lifeline.die_with_parent`):
the workers it forked keep its liveness pipe open, so it would otherwise outlive a driver that
was killed, and with it the workers. :data:`FORKSERVER_PID` tells a forked worker which process
its parent must be.

:func:`gc.freeze` moves the imported objects into the collector's permanent generation, so that
the workers' collections no longer walk the modules they were forked with, the memory pages they
share with the server stay shared, and the server exits without a final collection (a tenth of
a second with distributed loaded).
"""

import gc
import os

from deid.lifeline import die_with_parent

FORKSERVER_PID = os.getpid()
die_with_parent(os.getppid())

gc.freeze()
