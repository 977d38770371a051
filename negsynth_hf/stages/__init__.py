"""The stages of :func:`negsynth_hf.build.build_dataset`, each a function from typed records to typed records.

========================  =====================================================================
``inputs``                pairs and corpus, checked, as :class:`~.inputs.PairRows`
``mine``                  retriever + ``mine_hard_negatives`` -> :class:`~.mine.MinedRows`
``synthesize``            the ``Dataset.map`` transform -> :class:`~.synthesize.GeneratedRows`
``guard``                 embeddings + the false-negative guard -> :class:`~.guard.Verdicts`
``weight``                cross-fitted source probe -> :class:`~.weight.Weights`
``assemble``              fixed columns, fillers, one :class:`~.assemble.SlotRecord` per negative
========================  =====================================================================
"""
