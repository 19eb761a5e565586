//! `#[derive(Schema)]` for regionkv records.
//!
//! The derive computes, at compile time, a 64-bit fingerprint of what rkyv archives for the
//! type: the kind (struct or enum), every field's name in order, every field's type (through
//! that type's own `Schema` fingerprint, so a retyped field changes it), the variant names of
//! an enum in order with their explicit discriminants (rkyv stores those as tags), and the
//! rkyv attributes that change the archived bytes (`with`, `as`, `remote`, `niche`, ...). The type's own name is not part of it: renaming a struct keeps
//! its records readable. regionkv stores the fingerprint with every table and refuses to read
//! or write a table with a type whose fingerprint differs.
//!
//! Attributes:
//! - `#[schema(as = "label")]` on a field: the field's type is not hashed through its
//!   `Schema` impl but as the given label. For field types from other crates that have no
//!   `Schema` impl (and cannot get one here), and for recursive types (`Vec<Self>`-like
//!   fields). Change the label when the field's archived layout changes.
//! - `#[schema(crate = path)]` on the type: where regionkv is (default `::regionkv`).

use proc_macro::TokenStream;
use proc_macro2::{TokenStream as Tokens, TokenTree};
use quote::quote;
use syn::{Data, DeriveInput, Fields, parse_macro_input, spanned::Spanned};

/// Derives `regionkv::Schema`. See the crate documentation.
#[proc_macro_derive(Schema, attributes(schema))]
pub fn derive_schema(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// rkyv attribute keys that do not change the archived bytes (names of generated types,
/// extra derives and bounds): left out of the fingerprint, so adding a derive keeps records
/// readable.
const LAYOUT_NEUTRAL: &[&str] = &[
    "crate",
    "derive",
    "compare",
    "attr",
    "bytecheck",
    "archived",
    "resolver",
    "archive_bounds",
    "serialize_bounds",
    "deserialize_bounds",
    "omit_bounds",
];

struct SchemaAttrs {
    krate: Option<syn::Path>,
    label: Option<String>,
}

fn schema_attrs(attrs: &[syn::Attribute]) -> syn::Result<SchemaAttrs> {
    let mut out = SchemaAttrs {
        krate: None,
        label: None,
    };
    for a in attrs.iter().filter(|a| a.path().is_ident("schema")) {
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                out.krate = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("as") {
                let s: syn::LitStr = meta.value()?.parse()?;
                out.label = Some(s.value());
                Ok(())
            } else {
                Err(meta
                    .error("unknown schema attribute (expected `as = \"...\"` or `crate = path`)"))
            }
        })?;
    }
    Ok(out)
}

/// Token text without whitespace: stable across compiler versions, unlike `to_string`.
fn canonical(tokens: Tokens, out: &mut String) {
    for t in tokens {
        match t {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push_str(open);
                canonical(g.stream(), out);
                out.push_str(close);
            }
            TokenTree::Ident(i) => {
                if out.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    out.push(' ');
                }
                out.push_str(&i.to_string());
            }
            TokenTree::Punct(p) => out.push(p.as_char()),
            TokenTree::Literal(l) => {
                if out.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    out.push(' ');
                }
                out.push_str(&l.to_string());
            }
        }
    }
}

/// The layout-relevant parts of the `#[rkyv(...)]` attributes, in order, as canonical text.
fn rkyv_layout(attrs: &[syn::Attribute]) -> syn::Result<String> {
    let mut out = String::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("rkyv")) {
        let list = a.meta.require_list()?;
        let mut item: Vec<TokenTree> = Vec::new();
        let flush = |item: &mut Vec<TokenTree>, out: &mut String| {
            let key = match item.first() {
                Some(TokenTree::Ident(i)) => i.to_string(),
                _ => String::new(),
            };
            if !item.is_empty() && !LAYOUT_NEUTRAL.contains(&key.as_str()) {
                if !out.is_empty() {
                    out.push(',');
                }
                canonical(item.drain(..).collect(), out);
            }
            item.clear();
        };
        // Commas split the items, except inside generic arguments (`with = Map<A, B>`):
        // angle brackets are not token groups, so their depth is counted here.
        let mut angle = 0usize;
        let mut prev_dash = false;
        for t in list.tokens.clone() {
            match &t {
                TokenTree::Punct(p) if p.as_char() == ',' && angle == 0 => {
                    flush(&mut item, &mut out)
                }
                TokenTree::Punct(p) => {
                    match p.as_char() {
                        '<' => angle += 1,
                        '>' if !prev_dash => angle = angle.saturating_sub(1),
                        _ => {}
                    }
                    prev_dash = p.as_char() == '-';
                    item.push(t);
                }
                _ => {
                    prev_dash = false;
                    item.push(t);
                }
            }
        }
        flush(&mut item, &mut out);
    }
    Ok(out)
}

fn fields_fp(krate: &syn::Path, fields: &Fields) -> syn::Result<Tokens> {
    let (kind, list): (&str, Vec<&syn::Field>) = match fields {
        Fields::Named(f) => ("named", f.named.iter().collect()),
        Fields::Unnamed(f) => ("tuple", f.unnamed.iter().collect()),
        Fields::Unit => ("unit", Vec::new()),
    };
    let n = list.len() as u64;
    let mut steps = vec![quote! {
        let h = #krate::__private::fp_str(h, #kind);
        let h = #krate::__private::fp_u64(h, #n);
    }];
    for (i, f) in list.iter().enumerate() {
        let name = match &f.ident {
            Some(id) => id.to_string(),
            None => i.to_string(),
        };
        let layout = rkyv_layout(&f.attrs)?;
        let sa = schema_attrs(&f.attrs)?;
        if sa.krate.is_some() {
            return Err(syn::Error::new(
                f.span(),
                "`crate` belongs on the type, not a field",
            ));
        }
        let ty = &f.ty;
        let child = match sa.label {
            Some(label) => quote! { #krate::__private::fp_label(#label) },
            None => quote! { <#ty as #krate::Schema>::FINGERPRINT },
        };
        steps.push(quote! {
            let h = #krate::__private::fp_str(h, #name);
            let h = #krate::__private::fp_str(h, #layout);
            let h = #krate::__private::fp_u64(h, #child);
        });
    }
    Ok(quote! { #(#steps)* })
}

fn expand(input: DeriveInput) -> syn::Result<Tokens> {
    let top = schema_attrs(&input.attrs)?;
    if top.label.is_some() {
        return Err(syn::Error::new(
            input.ident.span(),
            "`as` belongs on a field; implement `Schema` by hand to label a whole type",
        ));
    }
    let krate: syn::Path = top.krate.unwrap_or_else(|| syn::parse_quote!(::regionkv));
    let container = rkyv_layout(&input.attrs)?;
    let body = match &input.data {
        Data::Struct(s) => {
            let f = fields_fp(&krate, &s.fields)?;
            quote! {
                let h = #krate::__private::fp_str(h, "struct");
                #f
            }
        }
        Data::Enum(e) => {
            let n = e.variants.len() as u64;
            let mut steps = Vec::new();
            for v in &e.variants {
                let name = v.ident.to_string();
                let layout = rkyv_layout(&v.attrs)?;
                let f = fields_fp(&krate, &v.fields)?;
                // rkyv archives an explicit discriminant as the variant's tag: `A = 1, B = 2`
                // and `A = 2, B = 1` store different bytes for `A`. Hashed only when given,
                // as its token text (so `= 2` and `= 1 + 1` differ: a false refusal, never
                // a false match).
                let disc = match &v.discriminant {
                    Some((_, expr)) => {
                        let mut text = String::from("=");
                        canonical(quote!(#expr), &mut text);
                        quote! { let h = #krate::__private::fp_str(h, #text); }
                    }
                    None => Tokens::new(),
                };
                steps.push(quote! {
                    let h = #krate::__private::fp_str(h, #name);
                    let h = #krate::__private::fp_str(h, #layout);
                    #disc
                    #f
                });
            }
            quote! {
                let h = #krate::__private::fp_str(h, "enum");
                let h = #krate::__private::fp_u64(h, #n);
                #(#steps)*
            }
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "Schema cannot be derived for a union (rkyv does not archive unions)",
            ));
        }
    };
    let ident = &input.ident;
    let name = ident.to_string();
    let mut generics = input.generics.clone();
    for p in generics.type_params_mut() {
        p.bounds.push(syn::parse_quote!(#krate::Schema));
    }
    let (impl_g, ty_g, where_g) = generics.split_for_impl();
    Ok(quote! {
        impl #impl_g #krate::Schema for #ident #ty_g #where_g {
            const TYPE_NAME: &'static str = #name;
            const FINGERPRINT: u64 = {
                let h = #krate::__private::FP_START;
                let h = #krate::__private::fp_str(h, #container);
                #body
                #krate::__private::fp_finish(h)
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(attr: syn::Attribute) -> String {
        rkyv_layout(&[attr]).unwrap()
    }

    #[test]
    fn neutral_keys_are_left_out_and_the_rest_kept_in_order() {
        assert_eq!(
            layout(syn::parse_quote!(#[rkyv(derive(Debug, PartialEq))])),
            ""
        );
        assert_eq!(
            layout(syn::parse_quote!(#[rkyv(compare(PartialEq), crate = regionkv::rkyv)])),
            ""
        );
        assert_eq!(
            layout(syn::parse_quote!(#[rkyv(derive(Debug), with = rkyv::with::AsBox)])),
            "with=rkyv::with::AsBox"
        );
    }

    #[test]
    fn commas_inside_generic_arguments_do_not_split_an_item() {
        // The second argument starts with a neutral key's name: it must stay in the item.
        let a = layout(syn::parse_quote!(#[rkyv(with = MapKV<Inline, crate::AsOne>)]));
        let b = layout(syn::parse_quote!(#[rkyv(with = MapKV<Inline, crate::AsTwo>)]));
        assert_eq!(a, "with=MapKV<Inline,crate::AsOne>");
        assert_ne!(a, b);
        let c = layout(syn::parse_quote!(#[rkyv(with = F<fn() -> u8, derive::X>, derive(Debug))]));
        assert_eq!(c, "with=F<fn()->u8,derive::X>");
    }
}
