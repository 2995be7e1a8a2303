module golang.org/x/tools
