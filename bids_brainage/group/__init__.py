"""The group level's library: collect the participant derivatives into one scan table
(``collect``), compute every statistic the dataset allows (``statistics``), write the group
tables and maps (``outputs``), and train model bundles (``training``). The CLI only calls it.
"""
