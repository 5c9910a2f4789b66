package sdk

// Paging through the services' list calls.

// allPages calls page with each page token in turn, starting with none, until a page
// names no next one, and returns the items of every page.
func allPages[T any](page func(token string) (items []T, next string, err error)) ([]T, error) {
	var out []T
	token := ""
	for {
		items, next, err := page(token)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if token = next; token == "" {
			return out, nil
		}
	}
}
