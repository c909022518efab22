package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// ErrInvalidUsername is wrapped by ValidateUsername's errors.
var ErrInvalidUsername = errors.New("invalid username")

// usernameRule validates only RegisterRequest.username: the contract's one
// definition of a username, so that accounts made outside the interceptor
// chain (parleyd subcommands, EnsureUser) are ones the API can name.
var usernameRule = sync.OnceValues(func() (protovalidate.Validator, error) {
	return protovalidate.New(protovalidate.WithMessages(&chatv1.RegisterRequest{}))
})

var usernameField = (&chatv1.RegisterRequest{}).ProtoReflect().Descriptor().Fields().ByName("username")

// ValidateUsername reports whether name is a username the protocol allows
// (chat.v1 RegisterRequest.username's rule), wrapping ErrInvalidUsername
// when it is not. Safe for concurrent use.
func ValidateUsername(name string) error {
	v, err := usernameRule()
	if err != nil {
		return fmt.Errorf("username rule: %w", err)
	}
	err = v.Validate(&chatv1.RegisterRequest{Username: name}, protovalidate.WithFilter(protovalidate.FilterFunc(
		func(_ protoreflect.Message, d protoreflect.Descriptor) bool {
			_, isField := d.(protoreflect.FieldDescriptor)
			return !isField || d == usernameField
		})))
	var ve *protovalidate.ValidationError
	if errors.As(err, &ve) {
		msgs := make([]string, 0, len(ve.Violations))
		for _, viol := range ve.Violations {
			msgs = append(msgs, viol.Proto.GetMessage())
		}
		return fmt.Errorf("%w %q: %s", ErrInvalidUsername, name, strings.Join(msgs, "; "))
	}
	return err
}

// UsernamePattern is the regular expression a username must match, as the
// contract states it (for help texts). Safe for concurrent use.
func UsernamePattern() string {
	rules, _ := proto.GetExtension(usernameField.Options(), validate.E_Field).(*validate.FieldRules)
	return rules.GetString().GetPattern()
}
