package pull

// Waiting returns how many messages wait in p's subscription for a call.
func Waiting(p *Puller) int { return len(p.ch) }
