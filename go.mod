module github.com/carrot-go/carrot

go 1.26
