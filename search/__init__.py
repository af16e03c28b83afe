"""Architecture search on predictors: the encoding (``encoding``), latency and accuracy predictors
(``latency``, ``accuracy``, ``fewshot``), the search problem and algorithms by name (``base``, ``registry``),
results files (``results``) and Pruning-as-Search (``pas``). May import ``profiler`` and ``supernet``; modules
are imported by name (``from hwnas.search.registry import make_searcher``) so that importing the package
stays light."""
