-- clean_text(s): the text quirks of the portal removed, for analysis (raw keeps the verbatim text).
-- Literal &nbsp; and U+00A0 become spaces, \r\n and lone \r become \n, runs of spaces collapse,
-- spaces around line breaks go,
-- and a value that is empty once trimmed becomes NULL.
CREATE OR REPLACE MACRO staging.clean_text(s) AS
    nullif(
        trim(
            regexp_replace(
                regexp_replace(
                    replace(replace(replace(replace(s, '&nbsp;', ' '), chr(160), ' '), chr(13) || chr(10), chr(10)), chr(13), chr(10)),
                    ' {2,}', ' ', 'g'
                ),
                '[ \t]*\n[ \t]*', chr(10), 'g'
            )
        ),
        ''
    )
