package mailtemplate

// SampleData returns the made-up request that templates are tried on at
// load, with every field set; `caddy mailauth preview` renders it.
func SampleData() Data { return sampleData() }
