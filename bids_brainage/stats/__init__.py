"""Group statistics on brain-age predictions: pure numerical code, no Nipype, no file layout."""
