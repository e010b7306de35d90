//! What a plugin file that is not a component was built as, from its first
//! bytes: a plugin built for the host (an ELF, Mach-O or PE library) or as
//! a core WebAssembly module is the usual first mistake, and the fix is one
//! flag, so the error names the flag instead of a file-format detail.

/// The flag that makes cargo build a component.
pub const FIX: &str = "add `--target wasm32-wasip2` to the build (`cargo build --release --target wasm32-wasip2`; `rustup target add wasm32-wasip2` once), and name the `.wasm` under target/wasm32-wasip2/release/ in the pipeline";

/// What `bytes` are, when they are a build for another target than a
/// component: e.g. "a native ELF shared library for x86-64".
pub fn built_for_another_target(bytes: &[u8]) -> Option<String> {
    if bytes.starts_with(b"\x7fELF") {
        return Some(elf(bytes));
    }
    let magic = bytes.get(..4)?;
    if [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
    ]
    .contains(&[magic[0], magic[1], magic[2], magic[3]])
    {
        return Some("a native Mach-O file (macOS)".into());
    }
    if magic.starts_with(b"MZ") {
        return Some("a native Windows PE file".into());
    }
    if magic == b"\0asm" && bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Some(
            "a core WebAssembly module (built for wasm32-unknown-unknown or wasm32-wasip1), not a component"
                .into(),
        );
    }
    None
}

/// "a native ELF shared library for x86-64", from the ELF header's type
/// and machine.
fn elf(bytes: &[u8]) -> String {
    // EI_DATA: 1 little-endian, 2 big-endian; e_type at 16, e_machine at 18.
    let half = |at: usize| {
        let pair = [*bytes.get(at)?, *bytes.get(at + 1)?];
        Some(match bytes.get(5) {
            Some(2) => u16::from_be_bytes(pair),
            _ => u16::from_le_bytes(pair),
        })
    };
    let kind = match half(16) {
        Some(1) => "object file",
        Some(2) => "executable",
        Some(3) => "shared library",
        _ => "file",
    };
    let machine = match half(18) {
        Some(3) => " for x86".to_string(),
        Some(62) => " for x86-64".to_string(),
        Some(40) => " for ARM".to_string(),
        Some(183) => " for AArch64".to_string(),
        Some(243) => " for RISC-V".to_string(),
        Some(m) => format!(" for machine {m}"),
        None => String::new(),
    };
    format!("a native ELF {kind}{machine}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of an ELF header (fixtures written from the ELF
    /// specification): class, data, version, then type and machine.
    fn elf_header(data: u8, kind: u16, machine: u16) -> Vec<u8> {
        let mut header = vec![0x7f, b'E', b'L', b'F', 2, data, 1, 0];
        header.extend([0; 8]);
        let (kind, machine) = if data == 2 {
            (kind.to_be_bytes(), machine.to_be_bytes())
        } else {
            (kind.to_le_bytes(), machine.to_le_bytes())
        };
        header.extend(kind);
        header.extend(machine);
        header
    }

    #[test]
    fn native_builds_are_named() {
        for (bytes, expected) in [
            (
                elf_header(1, 3, 62),
                "a native ELF shared library for x86-64",
            ),
            (
                elf_header(1, 3, 183),
                "a native ELF shared library for AArch64",
            ),
            (
                elf_header(2, 2, 21),
                "a native ELF executable for machine 21",
            ),
            (b"\x7fELF".to_vec(), "a native ELF file"),
            (
                vec![0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1],
                "a native Mach-O file (macOS)",
            ),
            (b"MZ\x90\0\x03\0\0\0".to_vec(), "a native Windows PE file"),
            (
                b"\0asm\x01\0\0\0".to_vec(),
                "a core WebAssembly module (built for wasm32-unknown-unknown or wasm32-wasip1), not a component",
            ),
        ] {
            assert_eq!(
                built_for_another_target(&bytes).as_deref(),
                Some(expected),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn this_test_binary_is_a_native_build() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let what = built_for_another_target(&me).unwrap();
        assert!(what.starts_with("a native ELF "), "{what}");
    }

    #[test]
    fn components_and_text_are_not_builds_for_another_target() {
        let component = std::fs::read(capstan_test_artifacts::HELLO).unwrap();
        assert_eq!(built_for_another_target(&component), None);
        assert_eq!(built_for_another_target(b"this is text"), None);
        assert_eq!(built_for_another_target(b""), None);
    }
}
