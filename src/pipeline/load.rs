//! Loading and validating pipeline files (written by the pipeline helper).
