package main

// analysis is appended to docs/benchmarks.md: why the numbers are what they
// are, and by how much and why a target is missed.
const analysis = `TODO
`
