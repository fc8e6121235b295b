package schema

import (
	"encoding/json"
)

// JSONSchema returns the JSON Schema (draft-07) of gilliam.yml, indented. Editors use it
// through yaml-language-server to complete keys, show each key's documentation and flag
// mistakes as they are typed. It is generated from the same tables as the decoder, so the
// two agree on every key and type; the rules that relate values to one another (a check
// needs a port, depends_on has no cycle, ...) are gilliam-sync's alone.
func JSONSchema() []byte {
	root := objectSchema(formationFields)
	root.Schema = "http://json-schema.org/draft-07/schema#"
	root.Title = "gilliam.yml"
	root.Description = "A gilliam-sync formation: the services of a repository and how they run. Reference: docs/gilliam-yml.md."
	// Top-level keys starting with x- are ignored: a place to hold YAML anchors.
	root.PatternProperties = map[string]*jsonSchema{"^x-": {}}
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		panic("schema: marshal JSON Schema: " + err.Error()) // plain data: cannot happen
	}
	return append(out, '\n')
}

// jsonSchema is the part of JSON Schema draft-07 the format needs.
type jsonSchema struct {
	Schema            string                 `json:"$schema,omitempty"`
	Title             string                 `json:"title,omitempty"`
	Description       string                 `json:"description,omitempty"`
	Type              any                    `json:"type,omitempty"` // a name or a list of names
	Enum              []string               `json:"enum,omitempty"`
	Default           any                    `json:"default,omitempty"`
	Pattern           string                 `json:"pattern,omitempty"`
	Minimum           *int                   `json:"minimum,omitempty"`
	Maximum           *int                   `json:"maximum,omitempty"`
	MinItems          int                    `json:"minItems,omitempty"`
	Items             *jsonSchema            `json:"items,omitempty"`
	MinProperties     int                    `json:"minProperties,omitempty"`
	Properties        map[string]*jsonSchema `json:"properties,omitempty"`
	PatternProperties map[string]*jsonSchema `json:"patternProperties,omitempty"`
	PropertyNames     *jsonSchema            `json:"propertyNames,omitempty"`
	// AdditionalProperties is false for objects with a fixed set of keys, or the schema
	// of every value of a mapping with names as keys.
	AdditionalProperties any           `json:"additionalProperties,omitempty"`
	Required             []string      `json:"required,omitempty"`
	AnyOf                []*jsonSchema `json:"anyOf,omitempty"`
}

// objectSchema is the schema of a mapping with the keys of fields and no others.
func objectSchema[T any](fields []field[T]) *jsonSchema {
	s := &jsonSchema{Type: "object", Properties: make(map[string]*jsonSchema), AdditionalProperties: false}
	for _, f := range fields {
		prop := *f.schema
		prop.Description = f.doc
		if f.def != emptyMapping {
			prop.Default = f.def
		}
		s.Properties[f.key] = &prop
		if f.required {
			s.Required = append(s.Required, f.key)
		}
	}
	return s
}

// mapSchema is the schema of a mapping whose keys are names matching namePattern, each
// with a value of the schema value.
func mapSchema(namePattern string, value *jsonSchema, minProperties int) *jsonSchema {
	return &jsonSchema{Type: "object", PropertyNames: &jsonSchema{Pattern: namePattern},
		AdditionalProperties: value, MinProperties: minProperties}
}

func envSchema() *jsonSchema {
	return mapSchema(envNamePattern, &jsonSchema{Type: []string{"string", "number", "boolean"}}, 0)
}

func listSchema(items *jsonSchema, minItems int) *jsonSchema {
	return &jsonSchema{Type: "array", Items: items, MinItems: minItems}
}

func stringSchema(pattern string) *jsonSchema {
	return &jsonSchema{Type: "string", Pattern: pattern}
}

func enumSchema(values []string) *jsonSchema {
	return &jsonSchema{Type: "string", Enum: values}
}

func integerSchema(lo, hi int) *jsonSchema {
	return &jsonSchema{Type: "integer", Minimum: &lo, Maximum: &hi}
}

func booleanSchema() *jsonSchema {
	return &jsonSchema{Type: "boolean"}
}

func durationSchema() *jsonSchema {
	return stringSchema(durationPattern)
}

// Sizes are strings with a unit or plain integers (bytes); in JSON Schema a pattern
// applies to strings only.
func sizeSchema() *jsonSchema {
	return &jsonSchema{Type: []string{"string", "integer"}, Pattern: sizePattern}
}

func cpuSchema() *jsonSchema {
	return &jsonSchema{Type: []string{"string", "number"}, Pattern: cpuPattern}
}

func anyOf(schemas ...*jsonSchema) *jsonSchema {
	return &jsonSchema{AnyOf: schemas}
}
