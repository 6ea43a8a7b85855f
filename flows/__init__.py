"""The bundled ML pipeline: preprocess -> tune -> train -> validate, built from @stage."""
