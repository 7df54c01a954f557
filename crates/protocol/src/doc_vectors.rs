//! The hex test vectors of `docs/protocol.md`, read from the document itself, so that
//! the tests check exactly what a reader of the document is told.

/// The protocol document.
pub(crate) const DOC: &str = include_str!("../../../docs/protocol.md");

/// The rows of the `name | hex | ...` table that follows the heading `heading` (the
/// whole line, such as `## Test vectors`), up to the next heading of the same or a
/// higher level, as `(name, bytes)`.
pub(crate) fn table(heading: &str) -> Vec<(&'static str, Vec<u8>)> {
    let level = &heading[..heading.find(' ').expect("a heading is hashes, a space, a title")];
    let section = DOC
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("docs/protocol.md has a {heading:?} section"));
    let section = section.split(&format!("\n{level} ")).next().unwrap_or(section);
    let section = if level.len() > 2 { section.split("\n## ").next().unwrap_or(section) } else { section };
    let mut rows = section.lines().filter(|line| line.starts_with('|')).map(|line| {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a vector row has three cells: {line}");
        (cells[0], cells[1])
    });
    assert_eq!(rows.next(), Some(("name", "hex")), "table header");
    assert_eq!(rows.next(), Some(("---", "---")), "table separator");
    rows.map(|(name, hex)| (name, parse_hex(name, hex))).collect()
}

/// Parses `` `xx xx ...` ``: lowercase byte pairs separated by single spaces.
fn parse_hex(name: &str, cell: &str) -> Vec<u8> {
    let hex = cell
        .strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or_else(|| panic!("{name}: hex is not in backticks: {cell}"));
    hex.split(' ')
        .map(|pair| {
            let well_formed =
                pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            assert!(well_formed, "{name}: {pair:?} is not a lowercase byte pair");
            u8::from_str_radix(pair, 16).unwrap()
        })
        .collect()
}

/// Checks the table under `heading` against `expected`: the same names, none twice,
/// and `check` passes for each vector with what it is expected to mean.
pub(crate) fn check_table<E>(
    heading: &str,
    expected: &[(&'static str, E)],
    mut check: impl FnMut(&str, &[u8], &E),
) {
    let vectors = table(heading);
    let mut in_doc: Vec<&str> = vectors.iter().map(|(name, _)| *name).collect();
    let mut wanted: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
    in_doc.sort_unstable();
    wanted.sort_unstable();
    let unique = in_doc.len();
    in_doc.dedup();
    assert_eq!(in_doc.len(), unique, "duplicate vector names in the doc");
    assert_eq!(in_doc, wanted, "the doc's vectors and the checked ones differ");
    for (name, bytes) in &vectors {
        let (_, expect) = expected.iter().find(|(wanted, _)| wanted == name).expect("compared above");
        check(name, bytes, expect);
    }
}
