//! Wording shared by every crate's error messages.

/// `a, b or c`: the choices an error message offers.
pub fn one_of<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// `"a", "b" or "c"`: [`one_of`] with each name quoted, for names that may hold spaces or
/// symbols (`kd+fd`).
pub fn one_of_quoted<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{:?}", n.as_ref())).collect();
    one_of(&quoted)
}

#[cfg(test)]
mod tests {
    use super::{one_of, one_of_quoted};

    #[test]
    fn lists_read_as_a_sentence() {
        assert_eq!(one_of(&["cpu"]), "cpu");
        assert_eq!(one_of(&["a", "b"]), "a or b");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
        assert_eq!(one_of::<&str>(&[]), "");
        assert_eq!(one_of_quoted(&["fp32", "bf16"]), r#""fp32" or "bf16""#);
    }
}
