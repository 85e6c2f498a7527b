"""Cutouts from public survey services for a catalogue of RA/Dec (``gzmorph cutouts``).

Services are data (:mod:`~gzmorph.cutouts.services`); answers are checked
(:mod:`~gzmorph.cutouts.validate`), fetched politely and asynchronously
(:mod:`~gzmorph.cutouts.fetch`), cached on disk by what was asked for
(:mod:`~gzmorph.cutouts.cache`), and written as a folder with a catalogue that
``gzmorph predict`` reads (:mod:`~gzmorph.cutouts.folder`); :mod:`~gzmorph.cutouts.job`
runs it all.
"""
