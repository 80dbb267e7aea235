"""Free text that a profile keeps: the object's own identifying values in their other spellings
(:mod:`deid.freetext.variants`) and identifiers the header never lists (:mod:`deid.freetext.detect`)."""
