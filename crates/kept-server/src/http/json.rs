//! A small JSON writer for the answers written straight into a byte buffer (decisions,
//! audiences), where building a `serde_json::Value` first would cost more than the work
//! itself: strings escaped as RFC 8259 requires, whole numbers, and `,"name":value` fields.

/// Writes `s` as a JSON string.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
            out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Writes a whole number.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    let mut v = n.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Writes `,"name":"value"`.
pub fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b',');
    push_str(out, name);
    out.push(b':');
    push_str(out, value);
}

/// Writes `,"name":value` for a whole number.
pub fn push_int_field(out: &mut Vec<u8>, name: &str, value: i64) {
    out.push(b',');
    push_str(out, name);
    out.push(b':');
    push_int(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_written_string_reads_back_as_itself(s in any::<String>()) {
            let mut out = Vec::new();
            push_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn a_written_number_reads_back_as_itself(n in any::<i64>()) {
            let mut out = Vec::new();
            push_int(&mut out, n);
            let back: i64 = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, n);
        }
    }

    #[test]
    fn numbers_are_written_as_rust_writes_them() {
        for n in [0i64, 7, -7, 10, 1_780_000_000_000, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn fields_are_written_after_a_comma() {
        let mut out = b"{\"a\":1".to_vec();
        push_field(&mut out, "b", "x\u{1}\"");
        push_int_field(&mut out, "c", i64::MIN);
        let back: serde_json::Value =
            serde_json::from_slice(&[out, b"}".to_vec()].concat()).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"a": 1, "b": "x\u{1}\"", "c": i64::MIN})
        );
    }
}
