"""``ms.doctor`` on a file: why won't it load here.

``report``: the report and its problems; ``files``: the diagnosis of a path; ``checks`` and
``frameworks``: the checks it runs. The verb itself, which also diagnoses objects with a
dry-run save, is :func:`modelsafe.doctor` (in :mod:`modelsafe._doctor`; a subpackage named
``doctor`` would shadow that verb as an attribute of the package once imported).
"""
