package carrot_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// readmeGivens declares the names README.md says its statement snippets use without
// declaring them, in the first paragraph of its section "carrot 0.4's examples, in Go".
// They are package variables, so a snippet that declares one of them anew
// (consumer, err := ...) must use it, as real code would.
const readmeGivens = `package snippet

import (
	"context"

	"github.com/carrot-go/carrot"
)

var (
	ctx       context.Context
	conn      *carrot.Conn
	publisher *carrot.Publisher
	consumer  *carrot.Consumer
	handler   carrot.Handler
)
`

// readmeImports are the packages a snippet without an import block may use, by the name
// it uses them with; the test adds the imports of those it uses.
var readmeImports = map[string]string{
	"backend":     "github.com/carrot-go/carrot/backend",
	"carrot":      "github.com/carrot-go/carrot",
	"conformance": "github.com/carrot-go/carrot/conformance",
	"context":     "context",
	"errors":      "errors",
	"fmt":         "fmt",
	"log":         "log",
	"slog":        "log/slog",
	"time":        "time",
	"url":         "net/url",
	"testing":     "testing",
}

// A snippet is one ```go block of README.md.
type snippet struct {
	line int    // the README line of its first line of code
	code string // its lines, each ending in a newline
}

// readmeSnippets returns the ```go blocks of the markdown in src.
func readmeSnippets(t *testing.T, src []byte) []snippet {
	t.Helper()
	var (
		snippets []snippet
		cur      *snippet
		fence    bool // inside a fenced block of another language
		code     strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			cur.code = code.String()
			snippets = append(snippets, *cur)
			cur = nil
		case cur != nil:
			code.WriteString(line + "\n")
		case fence && strings.HasPrefix(line, "```"):
			fence = false
		case fence:
		case line == "```go":
			cur = &snippet{line: n + 1}
			code.Reset()
		case strings.HasPrefix(line, "```"):
			fence = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: a ```go block is not closed", cur.line-1)
	}
	return snippets
}

// TestReadmeSnippets type-checks every Go snippet of README.md, so that none can stop
// compiling unnoticed. A snippet is either declarations (types, functions), checked as a
// file of its own, or statements, checked as the body of a function that returns an error
// with the names of readmeGivens in scope; either may start with an import block, which
// must then be complete, and otherwise imports what it uses of readmeImports. Errors are
// reported at their README.md line.
func TestReadmeSnippets(t *testing.T) {
	src, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	snippets := readmeSnippets(t, src)
	if len(snippets) < 10 {
		t.Fatalf("found %d Go snippets in README.md, want at least 10: is the extraction broken?", len(snippets))
	}

	fset := token.NewFileSet()
	var files []string // each snippet's source, as type-checked
	paths := map[string]bool{}
	workspace := inWorkspace(t)
	for _, s := range snippets {
		f, err := wrapSnippet(s)
		if err != nil {
			t.Errorf("%v", err)
			files = append(files, "")
			continue
		}
		imports, err := parser.ParseFile(token.NewFileSet(), "", f, parser.ImportsOnly)
		if err != nil {
			t.Fatalf("README.md:%d: parsing the wrapped snippet: %v", s.line, err)
		}
		var snippetPaths []string
		for _, is := range imports.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			snippetPaths = append(snippetPaths, p)
		}
		if !workspace && slices.ContainsFunc(snippetPaths, outsideRootModule) {
			// Such a snippet is checked with the workspace, as the README's test command runs.
			t.Logf("README.md:%d: not checked with GOWORK=off: it imports packages of the workspace's other modules", s.line)
			files = append(files, "")
			continue
		}
		files = append(files, f)
		for _, p := range snippetPaths {
			paths[p] = true
		}
	}
	paths["context"], paths["github.com/carrot-go/carrot"] = true, true // readmeGivens
	imp := exportImporter(t, fset, slices.Sorted(maps.Keys(paths)))

	givens, err := parser.ParseFile(fset, "readme_givens.go", readmeGivens, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range snippets {
		if files[i] == "" {
			continue
		}
		t.Run(fmt.Sprintf("line%d", s.line), func(t *testing.T) {
			f, err := parser.ParseFile(fset, "snippet.go", files[i], parser.ParseComments)
			if err != nil {
				t.Fatalf("%v\nthe snippet, wrapped:\n%s", err, files[i])
			}
			pkgFiles := []*ast.File{f}
			if isStatements(f) {
				pkgFiles = append(pkgFiles, givens)
			}
			var errs []string
			conf := types.Config{
				Importer: imp,
				Error:    func(err error) { errs = append(errs, err.Error()) },
			}
			conf.Check("snippet", fset, pkgFiles, nil)
			if len(errs) > 0 {
				t.Errorf("the Go snippet at README.md:%d does not compile:\n\t%s", s.line, strings.Join(errs, "\n\t"))
			}
		})
	}
}

// inWorkspace reports whether the go command uses go.work, which joins this module with
// the others of the repository.
func inWorkspace(t *testing.T) bool {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil {
		t.Fatalf("go env GOWORK: %v", err)
	}
	w := strings.TrimSpace(string(out))
	return w != "" && w != "off"
}

// outsideRootModule reports whether the package path belongs to neither the standard
// library nor this module: another module of the repository (a directory with a go.mod
// of its own) or a third party's.
func outsideRootModule(path string) bool {
	const root = "github.com/carrot-go/carrot"
	first, _, _ := strings.Cut(path, "/")
	if !strings.Contains(first, ".") {
		return false // standard library
	}
	if path != root && !strings.HasPrefix(path, root+"/") {
		return true
	}
	dir := strings.TrimPrefix(strings.TrimPrefix(path, root), "/")
	for d := dir; d != "" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return true
		}
	}
	return false
}

// isStatements reports whether f is a statement snippet's file: its statements are the
// body of the function wrapSnippet names "_".
func isStatements(f *ast.File) bool {
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "_" && fd.Recv == nil {
			return true
		}
	}
	return false
}

// wrapSnippet returns the source of a Go file for the snippet s, with //line comments that
// place its code at its lines of README.md.
func wrapSnippet(s snippet) (string, error) {
	at := func(line int) string { return fmt.Sprintf("//line README.md:%d\n", line) }
	const pkg = "package snippet\n"

	// Declarations: a Go file once it has a package clause.
	if f, err := parser.ParseFile(token.NewFileSet(), "", pkg+s.code, 0); err == nil {
		if len(f.Imports) > 0 {
			return pkg + at(s.line) + s.code, nil
		}
		return pkg + autoImports(f) + at(s.line) + s.code, nil
	}

	// Statements, after an import block if there is one.
	lines := strings.SplitAfter(s.code, "\n")
	var imports string
	fs := token.NewFileSet()
	if f, err := parser.ParseFile(fs, "", pkg+s.code, parser.ImportsOnly); err == nil && len(f.Imports) > 0 {
		end := fs.Position(f.Decls[len(f.Decls)-1].End()).Line - 1 // the last import line, from 1
		imports = strings.Join(lines[:end], "")
		lines = lines[end:]
	}
	body := strings.Join(lines, "")
	wrapped := "func _() error {\n" + at(s.line+strings.Count(imports, "\n")) + body + "return nil\n}\n"
	f, err := parser.ParseFile(token.NewFileSet(), "", pkg+wrapped, 0)
	if err != nil {
		return "", fmt.Errorf("the Go snippet at README.md:%d is neither declarations nor statements: %v", s.line, err)
	}
	if imports != "" {
		return pkg + at(s.line) + imports + wrapped, nil
	}
	return pkg + autoImports(f) + wrapped, nil
}

// autoImports returns an import declaration for the packages of readmeImports that f
// uses, by their names.
func autoImports(f *ast.File) string {
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && readmeImports[id.Name] != "" {
				used[id.Name] = true
			}
		}
		return true
	})
	if len(used) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("import (\n")
	for _, name := range slices.Sorted(maps.Keys(used)) {
		fmt.Fprintf(&b, "\t%s %q\n", name, readmeImports[name])
	}
	b.WriteString(")\n")
	return b.String()
}

// exportImporter returns an importer of the packages paths and their dependencies, from
// the export data that "go list -export" builds for them. It runs offline (GOPROXY=off):
// the module's dependencies are in the module cache, as for every test.
func exportImporter(t *testing.T, fset *token.FileSet, paths []string) types.Importer {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to type-check README.md's snippets: %v", err)
	}
	args := append([]string{"list", "-export", "-deps", "-f", "{{if .Export}}{{.ImportPath}}={{.Export}}{{end}}"}, paths...)
	cmd := exec.Command(gocmd, args...)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export %s: %v\n%s", strings.Join(paths, " "), err, stderr.Bytes())
	}
	export := map[string]string{}
	for line := range strings.Lines(string(out)) {
		path, file, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok {
			export[path] = file
		}
	}
	return importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file, ok := export[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %q: import only %s, or the module's own packages", path, readmeImportNames())
		}
		return os.Open(filepath.Clean(file))
	})
}

// readmeImportNames lists the import paths of readmeImports, for an error.
func readmeImportNames() string {
	return strings.Join(slices.Sorted(maps.Values(readmeImports)), ", ")
}

// exampleName matches the names of Example functions in README.md, quoted as code.
var exampleName = regexp.MustCompile("`(Example[A-Za-z0-9_]*)`")

// TestReadmeExamples checks that every Example function README.md names exists, in the
// example files of the root package or of a backend.
func TestReadmeExamples(t *testing.T) {
	src, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("backends/*/*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range append(files, more...) {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Example") {
				defined[fd.Name.Name] = true
			}
		}
	}
	named := map[string]bool{}
	for _, m := range exampleName.FindAllStringSubmatch(string(src), -1) {
		named[m[1]] = true
	}
	if len(named) == 0 {
		t.Fatal("README.md names no Example function")
	}
	for _, name := range slices.Sorted(maps.Keys(named)) {
		if !defined[name] {
			t.Errorf("README.md names %s, which no example file defines", name)
		}
	}
}

// readmeLink matches the targets of markdown links in README.md.
var readmeLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestReadmeLinks checks that every file README.md links to exists.
func TestReadmeLinks(t *testing.T) {
	src, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range readmeLink.FindAllStringSubmatch(string(src), -1) {
		target, _, _ := strings.Cut(m[1], "#")
		if target == "" || strings.Contains(target, "://") {
			continue // a heading of README.md, or a web page
		}
		if _, err := os.Stat(filepath.FromSlash(target)); err != nil {
			t.Errorf("README.md links to %s: %v", m[1], err)
		}
	}
}
