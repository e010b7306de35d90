//! Environment variables: name patterns (`NAME` or `PREFIX_*`) and the
//! variables a plugin sees.

/// Whether the name pattern `pattern` matches the variable `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether grant patterns cover a requested name (itself a name or prefix
/// pattern): a request `TF_VAR_*` is covered by `TF_VAR_*` or `TF_*`.
pub fn covers(grants: &[String], requested: &str) -> bool {
    grants.iter().any(
        |g| match (g.strip_suffix('*'), requested.strip_suffix('*')) {
            (Some(gp), Some(rp)) => rp.starts_with(gp),
            (Some(gp), None) => requested.starts_with(gp),
            (None, Some(_)) => false,
            (None, None) => g == requested,
        },
    )
}

/// Host variables whose names match one of `patterns`.
pub fn select(
    patterns: &[String],
    host: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut vars: Vec<_> = host
        .into_iter()
        .filter(|(k, _)| patterns.iter().any(|p| matches(p, k)))
        .collect();
    vars.sort();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let table = [
            ("HOME", "HOME", true),
            ("HOME", "HOMER", false),
            ("TF_VAR_*", "TF_VAR_region", true),
            ("TF_VAR_*", "TF_VARX", false),
            ("*", "ANYTHING", true),
            ("AWS_*", "PATH", false),
        ];
        for (pattern, name, expected) in table {
            assert_eq!(matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn coverage_of_requests() {
        let grants = vec!["TF_*".to_string(), "HOME".to_string()];
        let table = [
            ("HOME", true),
            ("TF_VAR_*", true),
            ("TF_LOG", true),
            ("USER", false),
            ("HOME*", false),
            ("*", false),
        ];
        for (requested, expected) in table {
            assert_eq!(covers(&grants, requested), expected, "{requested}");
        }
    }

    #[test]
    fn selects_only_matching_host_vars() {
        let host = vec![
            ("HOME".into(), "/root".into()),
            ("SECRET".into(), "x".into()),
            ("TF_VAR_a".into(), "1".into()),
        ];
        let got = select(&["HOME".into(), "TF_VAR_*".into()], host);
        assert_eq!(
            got,
            vec![
                ("HOME".to_string(), "/root".to_string()),
                ("TF_VAR_a".to_string(), "1".to_string())
            ]
        );
    }
}
