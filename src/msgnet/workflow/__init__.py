"""What a user runs: training a whole run, sampling through quality control, the job that ends in a
benchmark and a report, and :class:`MSGNet`, the trained generator as one Python object.

This layer combines the ones below it (training, sampling, evaluation); nothing below imports it.
"""
