//! One CSV cell as every CSV Kept writes it: quoted per RFC 4180 when it must be, and defused
//! against formula injection (OWASP "CSV injection"), since traits arrive from the web and
//! exports are opened in spreadsheets.

use std::borrow::Cow;

/// The characters that make a spreadsheet read a cell as a formula when they start it.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `value` as one CSV cell: prefixed with `'` when it starts like a formula (so a spreadsheet
/// shows it as text), then quoted when it holds a comma, a quote or a line break.
pub fn field(value: &str) -> Cow<'_, str> {
    let defused = value.starts_with(FORMULA_STARTS);
    let quoted = value.contains([',', '"', '\n', '\r']);
    if !defused && !quoted {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 3);
    if quoted {
        out.push('"');
    }
    if defused {
        out.push('\'');
    }
    if quoted {
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn plain_cells_are_unchanged() {
        assert_eq!(field("u-12"), "u-12");
        assert_eq!(field(""), "");
        assert_eq!(field("a=b"), "a=b");
    }

    #[test]
    fn formula_starts_are_defused() {
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("+1"), "'+1");
        assert_eq!(field("-2"), "'-2");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("\tx"), "'\tx");
        assert_eq!(field("\rx"), "\"'\rx\"");
    }

    #[test]
    fn separators_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("a\nb"), "\"a\nb\"");
    }
}
