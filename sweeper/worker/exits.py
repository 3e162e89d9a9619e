"""How a worker process ends, told by its exit code: the pool and the controller read it.

0 = no work left (budget spent or deadline passed); 3 = asks to be replaced by a fresh process
(TensorFlow leaks memory across trials); 130 = stopped by a signal, or because the controller that
started it is gone (sweeper.worker.lifeline); 2 = user error; 1 = too many failures in a row, or a
bug. Its own module, so that the controller side reads these without importing the worker's loop.
"""

EXIT_DONE, EXIT_RECYCLE, EXIT_FAILING, EXIT_INTERRUPTED = 0, 3, 1, 130
