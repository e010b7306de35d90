//! Bounds on a plugin's shape, checked before it is compiled.
//!
//! Compiling a component costs memory and time in proportion to its
//! *structure*, not its size: a 92 KiB component of deeply nested components
//! made `capstan plugin describe` use 1.27 GiB, and a component that
//! instantiates a nested component a few times at each of a few levels makes
//! Wasmtime inline an exponential number of instances (measured: 313 bytes,
//! 7 levels each instantiating the next 10 times, took 10 s and 558 MB to
//! compile; each level more multiplies both by about 10). So before the bytes
//! reach [`wasmtime::component::Component::from_binary`], [`check`] walks the
//! payloads once with `wasmparser` (the copy Wasmtime itself uses: no
//! validation, only the structure) and refuses a component over any of
//! [`PLUGIN_LIMITS`], naming the bound and the value it found. The walk stops
//! at the first bound exceeded, so a hostile component is refused after
//! reading only as much of it as it takes to see that.
//!
//! A binary the parser cannot read is not refused here: the compiler reports
//! it with a better message, and it fails at the same place this walk does,
//! before any of the costly work that the bounds guard.
//!
//! What the first-party plugins measure (release builds for wasm32-wasip2,
//! opt-level "z" as the workspace's Cargo.toml sets for plugins, wit-bindgen
//! 0.61, Rust 1.95; the `first_party_plugins_are_within_bounds` test prints
//! this table with `--nocapture`, and fails if a plugin comes within 10× of a
//! bound other than the depths):
//!
//! ```text
//! plugin                size depth nested instances aliases types type depth inlined largest fn
//! hello               337476     2      4        22      77    41          1      23       8124
//! packer              643814     2      4        25     100    43          1      26      33474
//! terraform           672589     2      4        25     100    43          1      26      18378
//! approval            423172     2      4        21      58    39          1      22      15573
//! ansible             592405     2      4        25      93    43          1      26      21827
//! smoke-test          672179     2      4        26      93    44          1      27      16631
//! custom-stage        389943     2      4        22      59    40          1      23      14883
//! adversary           693895     2      4        27     102    45          1      28      58704
//! old-contract         63561     2      4        18      41    25          1      19       5795
//! ```
//!
//! (Depth 2 and 4 nested: one component holding the program's core module,
//! the WASI adapter and wit-component's two shim modules.) Every bound but
//! the two depths leaves 17× or more of headroom over these, so a plugin
//! written in another language, or with many more imports, still fits, while
//! each keeps the work of compiling small; the depths are explained at
//! [`PLUGIN_LIMITS`].

use std::fmt;

use thiserror::Error;
use wasmparser::{
    BinaryReader, ComponentAlias, ComponentExternName, ComponentExternalKind, ComponentImport,
    ComponentInstance, ComponentOuterAliasKind, ComponentType, ComponentTypeRef, CoreType,
    Encoding, Parser, Payload,
};

/// The limits a component must stay within to be compiled (and, as
/// [`Shape`], what a component measures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in the file.
    pub size: u64,
    /// Nesting depth: the outer component is 1, a core module or component
    /// inside it 2, and so on.
    pub depth: u64,
    /// Components and core modules defined inside the outer one, at every
    /// level.
    pub nested: u64,
    /// Core and component instances declared, at every level.
    pub instances: u64,
    /// Aliases declared, at every level.
    pub aliases: u64,
    /// Component and core type definitions in components, at every level.
    pub types: u64,
    /// Nesting depth of component and instance types: a component type is
    /// 1, an instance type declared inside it 2, and so on. Wasmtime's parser
    /// reads and validates these recursively, so a deep one overflows the
    /// stack and aborts the process: 1 000 levels, 3 KiB of file, did so on a
    /// 2 MiB thread (a Tokio worker's stack).
    pub type_depth: u64,
    /// Instances Wasmtime creates when it inlines every instantiation of a
    /// nested component into the outer one (a component instantiated three
    /// times counts three times, with everything inside it).
    pub inlined_instances: u64,
    /// Bytes in the largest core function body (the unit Cranelift compiles
    /// at once, so what one compilation thread holds in memory grows with it).
    pub function_size: u64,
}

/// The limits every plugin is held to.
/// The measured values in the comments are the largest among the
/// first-party plugins (the table in the module docs).
pub const PLUGIN_LIMITS: Limits = Limits {
    // Measured: 678 KiB.
    size: 64 << 20,
    // Measured: 2. First-party plugins (wit-bindgen, wasm32-wasip2) are one
    // component of core modules. Composing components (e.g. with `wac`) adds
    // a level per composition step; 8 leaves room for several while keeping
    // the nested states a compiler holds at once few.
    depth: 8,
    // Measured: 4.
    nested: 100,
    // Measured: 27.
    instances: 1_000,
    // Measured: 102.
    aliases: 10_000,
    // Measured: 45.
    types: 10_000,
    // Measured: 1. Wasmtime's parser recurses once per level, using some KiB
    // of stack each (1 000 levels overflowed 2 MiB): 32 levels stay far below
    // a 2 MiB thread stack.
    type_depth: 32,
    // Measured: 28 (the instances declared, plus the outer component: they
    // instantiate no nested component).
    inlined_instances: 1_000,
    // Measured: 58 704 bytes.
    function_size: 1 << 20,
};

/// One of the [`Limits`], to name in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Size,
    Depth,
    Nested,
    Instances,
    Aliases,
    Types,
    TypeDepth,
    InlinedInstances,
    FunctionSize,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bound::Size => "its size in bytes",
            Bound::Depth => "the nesting depth of its components and modules",
            Bound::Nested => "the number of components and core modules inside it",
            Bound::Instances => "the number of instances it declares",
            Bound::Aliases => "the number of aliases it declares",
            Bound::Types => "the number of types it declares",
            Bound::TypeDepth => "the nesting depth of its component and instance types",
            Bound::InlinedInstances => "the number of instances once nested components are inlined",
            Bound::FunctionSize => "the size in bytes of its largest function",
        })
    }
}

/// Why a component is refused before compiling.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BoundsError {
    /// A bound was exceeded; `found` is the value when the walk stopped, so
    /// the whole component may hold more.
    #[error("{bound} reaches {found}, over the limit of {max}")]
    Exceeded { bound: Bound, found: u64, max: u64 },
    /// A component instantiates a component it imported or took from an
    /// instance's exports: what that costs depends on the arguments it is
    /// given, which cannot be bounded without doing the compiler's work.
    #[error(
        "it instantiates a component it imported or took from an instance (at byte {offset}), so {} cannot be bounded before compiling",
        Bound::InlinedInstances
    )]
    UnboundedInstantiation { offset: usize },
}

/// What [`check`] measured: the maximum depth, the largest function, and
/// every other count summed over the whole component (the same quantities
/// the [`Limits`] bound).
pub type Shape = Limits;

/// Check `bytes` against [`PLUGIN_LIMITS`].
pub fn check(bytes: &[u8]) -> Result<Shape, BoundsError> {
    check_with(bytes, &PLUGIN_LIMITS)
}

/// How many instances a component creates when instantiated once, with every
/// nested instantiation inlined; `None` when that depends on what it is
/// given (an imported component).
type Weight = Option<u64>;

/// One component or module being walked.
struct Frame {
    encoding: Encoding,
    /// The weight of each item of the component index space, in order.
    components: Vec<Weight>,
    /// This component's own weight so far.
    weight: u64,
}

/// Check `bytes` against `limits`.
pub fn check_with(bytes: &[u8], limits: &Limits) -> Result<Shape, BoundsError> {
    let mut shape = Shape {
        size: bytes.len() as u64,
        ..Shape::default()
    };
    over(Bound::Size, shape.size, limits.size)?;
    let mut stack: Vec<Frame> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        // Malformed: the compiler says where and why (see the module docs).
        let Ok(payload) = payload else { break };
        match payload {
            Payload::Version { encoding, .. } => {
                if !stack.is_empty() {
                    shape.nested += 1;
                    over(Bound::Nested, shape.nested, limits.nested)?;
                }
                let depth = stack.len() as u64 + 1;
                shape.depth = shape.depth.max(depth);
                over(Bound::Depth, depth, limits.depth)?;
                stack.push(Frame {
                    encoding,
                    components: Vec::new(),
                    weight: 1,
                });
            }
            Payload::End(_) => {
                let Some(frame) = stack.pop() else { break };
                if frame.encoding != Encoding::Component {
                    continue;
                }
                match stack.last_mut() {
                    // A nested component: one more in its parent's index space.
                    Some(parent) => parent.components.push(Some(frame.weight)),
                    None => shape.inlined_instances = frame.weight,
                }
            }
            Payload::InstanceSection(reader) => {
                let count = u64::from(reader.count());
                shape.instances += count;
                over(Bound::Instances, shape.instances, limits.instances)?;
                if let Some(frame) = stack.last_mut() {
                    frame.weight = frame.weight.saturating_add(count);
                    over(
                        Bound::InlinedInstances,
                        frame.weight,
                        limits.inlined_instances,
                    )?;
                }
            }
            Payload::ComponentInstanceSection(reader) => {
                shape.instances += u64::from(reader.count());
                over(Bound::Instances, shape.instances, limits.instances)?;
                let Some(frame) = stack.last_mut() else { break };
                for instance in reader.into_iter_with_offsets() {
                    let Ok((offset, instance)) = instance else {
                        break;
                    };
                    let added = match instance {
                        ComponentInstance::Instantiate {
                            component_index, ..
                        } => match frame.components.get(component_index as usize) {
                            Some(Some(weight)) => *weight,
                            Some(None) => {
                                return Err(BoundsError::UnboundedInstantiation { offset });
                            }
                            // Out of range: invalid, the compiler says so.
                            None => 1,
                        },
                        ComponentInstance::FromExports(_) => 1,
                    };
                    frame.weight = frame.weight.saturating_add(added);
                    over(
                        Bound::InlinedInstances,
                        frame.weight,
                        limits.inlined_instances,
                    )?;
                }
            }
            Payload::ComponentAliasSection(reader) => {
                shape.aliases += u64::from(reader.count());
                over(Bound::Aliases, shape.aliases, limits.aliases)?;
                for alias in reader {
                    let Ok(alias) = alias else { break };
                    let weight = match alias {
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Component,
                            ..
                        } => None,
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::Component,
                            count,
                            index,
                        } => stack
                            .len()
                            .checked_sub(1 + count as usize)
                            .and_then(|outer| stack[outer].components.get(index as usize))
                            .copied()
                            .unwrap_or(Some(1)),
                        _ => continue,
                    };
                    if let Some(frame) = stack.last_mut() {
                        frame.components.push(weight);
                    }
                }
            }
            Payload::ComponentImportSection(reader) => {
                let Some(frame) = stack.last_mut() else { break };
                for import in reader {
                    let Ok(import) = import else { break };
                    if let ComponentTypeRef::Component(_) = import.ty {
                        frame.components.push(None);
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                // An export is also a new item in its kind's index space.
                let Some(frame) = stack.last_mut() else { break };
                for export in reader {
                    let Ok(export) = export else { break };
                    if export.kind == ComponentExternalKind::Component {
                        let weight = frame
                            .components
                            .get(export.index as usize)
                            .copied()
                            .unwrap_or(Some(1));
                        frame.components.push(weight);
                    }
                }
            }
            Payload::ComponentTypeSection(reader) => {
                shape.types += u64::from(reader.count());
                over(Bound::Types, shape.types, limits.types)?;
                let range = reader.range();
                let section = BinaryReader::new(&bytes[range.clone()], range.start);
                let depth = type_depth(section, limits.type_depth)?;
                shape.type_depth = shape.type_depth.max(depth);
            }
            Payload::CoreTypeSection(reader) => {
                shape.types += u64::from(reader.count());
                over(Bound::Types, shape.types, limits.types)?;
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                shape.function_size = shape.function_size.max(size);
                over(Bound::FunctionSize, size, limits.function_size)?;
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// Where [`type_depth`] is in a list of type definitions or declarations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TypeList {
    /// A type section: each item is a type.
    Section,
    /// A component type's declarations.
    Component,
    /// An instance type's declarations.
    Instance,
}

/// The deepest nesting of component and instance types in a component type
/// section, found without recursing (see [`Limits::type_depth`]): the
/// declarations of a component or instance type are walked with a stack of
/// lists, and everything else is read with wasmparser's own readers, which
/// do not recurse for it. This mirrors wasmparser's
/// `ComponentTypeDeclaration` and `InstanceTypeDeclaration` readers. Stops
/// at the first level over `max`; a section it cannot read is left to the
/// compiler (which stops at the same byte, no deeper).
fn type_depth(mut reader: BinaryReader<'_>, max: u64) -> Result<u64, BoundsError> {
    let mut deepest = 0;
    let Ok(count) = reader.read_var_u32() else {
        return Ok(0);
    };
    let mut lists = vec![(TypeList::Section, count)];
    while let Some((list, remaining)) = lists.last_mut() {
        if *remaining == 0 {
            lists.pop();
            continue;
        }
        *remaining -= 1;
        let list = *list;
        let is_type = match list {
            TypeList::Section => true,
            TypeList::Component | TypeList::Instance => {
                let Ok(byte) = reader.read_u8() else { break };
                let read = match byte {
                    0x03 if list == TypeList::Component => {
                        reader.read::<ComponentImport<'_>>().map(drop)
                    }
                    0x00 => reader.read::<CoreType<'_>>().map(drop),
                    0x01 => Ok(()),
                    0x02 => reader.read::<ComponentAlias<'_>>().map(drop),
                    0x04 => reader
                        .read::<ComponentExternName<'_>>()
                        .and_then(|_| reader.read::<ComponentTypeRef>())
                        .map(drop),
                    _ => break,
                };
                if read.is_err() {
                    break;
                }
                byte == 0x01
            }
        };
        if !is_type {
            continue;
        }
        let Ok(byte) = reader.clone().read_u8() else {
            break;
        };
        let nested = match byte {
            0x41 => TypeList::Component,
            0x42 => TypeList::Instance,
            // Any other type holds no declarations: read it whole.
            _ => {
                if reader.read::<ComponentType<'_>>().is_err() {
                    break;
                }
                continue;
            }
        };
        let (Ok(_), Ok(count)) = (reader.read_u8(), reader.read_var_u32()) else {
            break;
        };
        // The section's own list is not a level.
        let depth = lists.len() as u64;
        deepest = deepest.max(depth);
        over(Bound::TypeDepth, depth, max)?;
        lists.push((nested, count));
    }
    Ok(deepest)
}

fn over(bound: Bound, found: u64, max: u64) -> Result<(), BoundsError> {
    if found > max {
        Err(BoundsError::Exceeded { bound, found, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wasm_encoder::{
        Alias, CodeSection, Component, ComponentAliasSection, ComponentExportKind,
        ComponentExportSection, ComponentImportSection, ComponentInstanceSection,
        ComponentOuterAliasKind, ComponentType, ComponentTypeRef, ComponentTypeSection, Function,
        FunctionSection, InstanceType, Instruction, Module, ModuleSection, NestedComponentSection,
        TypeSection,
    };

    use super::*;

    /// `levels` components, each the only thing inside the next.
    fn nested(levels: usize) -> Vec<u8> {
        let mut component = Component::new();
        for _ in 1..levels {
            let mut outer = Component::new();
            outer.section(&NestedComponentSection(&component));
            component = outer;
        }
        component.finish()
    }

    /// A component that defines `inner` and instantiates it `times` times.
    fn instantiating(inner: &Component, times: usize) -> Component {
        let mut component = Component::new();
        component.section(&NestedComponentSection(inner));
        let mut instances = ComponentInstanceSection::new();
        for _ in 0..times {
            instances.instantiate(0, Vec::<(&str, ComponentExportKind, u32)>::new());
        }
        component.section(&instances);
        component
    }

    /// Whether Wasmtime compiles `bytes`: the components built here are
    /// valid, so the shapes measured are of things a plugin could be.
    fn compiles(bytes: &[u8]) -> Result<(), String> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        wasmtime::component::Component::from_binary(&engine, bytes)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn deeply_nested_is_refused_where_the_bound_is_crossed() {
        // 3 000 levels: a few dozen KiB, like the component that made
        // `plugin describe` use 1.27 GiB.
        let bytes = nested(3_000);
        assert_eq!(
            check(&bytes),
            Err(BoundsError::Exceeded {
                bound: Bound::Depth,
                found: PLUGIN_LIMITS.depth + 1,
                max: PLUGIN_LIMITS.depth,
            })
        );
        // At the bound it passes, and it is a valid component.
        let bytes = nested(PLUGIN_LIMITS.depth as usize);
        let shape = check(&bytes).unwrap();
        assert_eq!(shape.depth, PLUGIN_LIMITS.depth);
        assert_eq!(shape.nested, PLUGIN_LIMITS.depth - 1);
        compiles(&bytes).unwrap();
    }

    /// A component type nested `levels` deep, alternating with instance
    /// types, in a component's type section.
    fn nested_types(levels: usize) -> Vec<u8> {
        enum Type {
            Component(ComponentType),
            Instance(InstanceType),
        }
        let mut ty = Type::Component(ComponentType::new());
        for _ in 1..levels {
            ty = match ty {
                Type::Component(inner) => {
                    let mut outer = InstanceType::new();
                    outer.ty().component(&inner);
                    Type::Instance(outer)
                }
                Type::Instance(inner) => {
                    let mut outer = ComponentType::new();
                    outer.ty().instance(&inner);
                    Type::Component(outer)
                }
            };
        }
        let mut types = ComponentTypeSection::new();
        match &ty {
            Type::Component(ty) => types.component(ty),
            Type::Instance(ty) => types.instance(ty),
        };
        let mut component = Component::new();
        component.section(&types);
        component.finish()
    }

    #[test]
    fn deeply_nested_types_are_refused_without_recursing() {
        // Deep enough to overflow any thread's stack if read recursively.
        let bytes = nested_types(200_000);
        assert_eq!(
            check(&bytes),
            Err(BoundsError::Exceeded {
                bound: Bound::TypeDepth,
                found: PLUGIN_LIMITS.type_depth + 1,
                max: PLUGIN_LIMITS.type_depth,
            })
        );
        let bytes = nested_types(PLUGIN_LIMITS.type_depth as usize);
        assert_eq!(check(&bytes).unwrap().type_depth, PLUGIN_LIMITS.type_depth);
        compiles(&bytes).unwrap();
    }

    #[test]
    fn too_many_modules_are_refused() {
        let mut component = Component::new();
        let module = Module::new();
        for _ in 0..1_000 {
            component.section(&ModuleSection(&module));
        }
        assert_eq!(
            check(&component.finish()),
            Err(BoundsError::Exceeded {
                bound: Bound::Nested,
                found: PLUGIN_LIMITS.nested + 1,
                max: PLUGIN_LIMITS.nested,
            })
        );
    }

    #[test]
    fn exponential_instantiation_is_refused() {
        // Each level instantiates the one inside it 10 times: few instances
        // declared, but 1 + 10 + 100 + 1000 once Wasmtime inlines them.
        let mut component = Component::new();
        for _ in 0..4 {
            component = instantiating(&component, 10);
        }
        let err = check(&component.finish()).unwrap_err();
        let BoundsError::Exceeded { bound, found, max } = err else {
            panic!("{err:?}")
        };
        assert_eq!(bound, Bound::InlinedInstances);
        assert_eq!(max, PLUGIN_LIMITS.inlined_instances);
        assert!(found > max, "{found}");
    }

    #[test]
    fn inlined_instances_follow_outer_aliases_and_exports() {
        fn no_args() -> Vec<(&'static str, ComponentExportKind, u32)> {
            Vec::new()
        }
        /// A component that aliases component `index` of its parent, then
        /// instantiates it `times` times.
        fn aliasing(index: u32, times: usize) -> Component {
            let mut component = Component::new();
            let mut aliases = ComponentAliasSection::new();
            aliases.alias(Alias::Outer {
                kind: ComponentOuterAliasKind::Component,
                count: 1,
                index,
            });
            component.section(&aliases);
            let mut instances = ComponentInstanceSection::new();
            for _ in 0..times {
                instances.instantiate(0, no_args());
            }
            component.section(&instances);
            component
        }
        // 0 = E, empty: weight 1. 1 = A, instantiates E 3 times: 1 + 3.
        // 2 = B, instantiates its export of A (aliased from outside): 1 + 4.
        let mut b = aliasing(1, 0);
        let mut exports = ComponentExportSection::new();
        exports.export("a", ComponentExportKind::Component, 0, None);
        b.section(&exports);
        let mut instances = ComponentInstanceSection::new();
        instances.instantiate(1, no_args());
        b.section(&instances);

        let mut outer = Component::new();
        outer.section(&NestedComponentSection(&Component::new()));
        outer.section(&NestedComponentSection(&aliasing(0, 3)));
        outer.section(&NestedComponentSection(&b));
        let mut instances = ComponentInstanceSection::new();
        for index in [1, 1, 2] {
            instances.instantiate(index, no_args());
        }
        outer.section(&instances);
        let bytes = outer.finish();
        compiles(&bytes).unwrap();
        let shape = check(&bytes).unwrap();
        // The outer one, A twice, B.
        assert_eq!(shape.inlined_instances, 1 + 4 + 4 + 5);
        assert_eq!(shape.instances, 3 + 1 + 3);
        assert_eq!(shape.aliases, 2);
        assert_eq!((shape.depth, shape.nested), (2, 3));
    }

    #[test]
    fn instantiating_an_imported_component_is_refused() {
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.component(&ComponentType::new());
        component.section(&types);
        let mut imports = ComponentImportSection::new();
        imports.import("c", ComponentTypeRef::Component(0));
        component.section(&imports);
        let mut instances = ComponentInstanceSection::new();
        instances.instantiate(0, Vec::<(&str, ComponentExportKind, u32)>::new());
        component.section(&instances);
        assert!(matches!(
            check(&component.finish()),
            Err(BoundsError::UnboundedInstantiation { .. })
        ));
    }

    #[test]
    fn size_and_function_size_are_bounded() {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        module.section(&types);
        let mut functions = FunctionSection::new();
        functions.function(0);
        module.section(&functions);
        let mut code = CodeSection::new();
        let mut body = Function::new([]);
        for _ in 0..1_000 {
            body.instruction(&Instruction::Nop);
        }
        body.instruction(&Instruction::End);
        code.function(&body);
        module.section(&code);
        let mut component = Component::new();
        component.section(&ModuleSection(&module));
        let bytes = component.finish();

        let shape = check(&bytes).unwrap();
        assert!(shape.function_size > 1_000, "{shape:?}");
        let small = Limits {
            function_size: 1_000,
            ..PLUGIN_LIMITS
        };
        assert!(matches!(
            check_with(&bytes, &small),
            Err(BoundsError::Exceeded {
                bound: Bound::FunctionSize,
                ..
            })
        ));
        let tiny = Limits {
            size: 100,
            ..PLUGIN_LIMITS
        };
        assert_eq!(
            check_with(&bytes, &tiny),
            Err(BoundsError::Exceeded {
                bound: Bound::Size,
                found: bytes.len() as u64,
                max: 100,
            })
        );
    }

    #[test]
    fn malformed_bytes_are_left_to_the_compiler() {
        assert!(check(b"\0asm\x0d\0\x01\0\xff\xff\xff").is_ok());
        assert!(check(b"").is_ok());
    }

    #[test]
    fn messages_name_the_bound_and_the_values() {
        let err = BoundsError::Exceeded {
            bound: Bound::Depth,
            found: 9,
            max: 8,
        };
        assert_eq!(
            err.to_string(),
            "the nesting depth of its components and modules reaches 9, over the limit of 8"
        );
    }

    /// The first-party plugins pass with room to spare. Run with
    /// `--nocapture` to print the table in the module docs.
    #[test]
    fn first_party_plugins_are_within_bounds() {
        println!(
            "{:<20}{:>9}{:>6}{:>7}{:>10}{:>8}{:>6}{:>11}{:>8}{:>11}",
            "plugin",
            "size",
            "depth",
            "nested",
            "instances",
            "aliases",
            "types",
            "type depth",
            "inlined",
            "largest fn"
        );
        for (package, path) in capstan_test_artifacts::ALL {
            let bytes = std::fs::read(path).unwrap();
            let s = check(&bytes).unwrap_or_else(|e| panic!("{package}: {e}"));
            println!(
                "{:<20}{:>9}{:>6}{:>7}{:>10}{:>8}{:>6}{:>11}{:>8}{:>11}",
                package.trim_start_matches("capstan-"),
                s.size,
                s.depth,
                s.nested,
                s.instances,
                s.aliases,
                s.types,
                s.type_depth,
                s.inlined_instances,
                s.function_size
            );
            // At least ten times below each bound but the depth.
            let l = PLUGIN_LIMITS;
            for (what, found, max) in [
                ("size", s.size, l.size),
                ("nested", s.nested, l.nested),
                ("instances", s.instances, l.instances),
                ("aliases", s.aliases, l.aliases),
                ("types", s.types, l.types),
                ("inlined", s.inlined_instances, l.inlined_instances),
                ("largest fn", s.function_size, l.function_size),
            ] {
                assert!(found * 10 <= max, "{package}: {what} {found} of {max}");
            }
            assert!(s.depth * 2 <= l.depth, "{package}: depth {}", s.depth);
            assert!(
                s.type_depth * 4 <= l.type_depth,
                "{package}: type depth {}",
                s.type_depth
            );
        }
    }
}
